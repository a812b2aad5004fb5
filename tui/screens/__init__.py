"""The app's screens that stand on their own: the store's episodes and training."""

from tui.screens.episodes import EpisodesScreen
from tui.screens.train import TrainScreen

__all__ = ["EpisodesScreen", "TrainScreen"]
