"""How long a recorded episode lasts when `--episode-time` is not given, in a module light enough for
`rig --help` to read."""

DEFAULT_EPISODE_S = 10.0  # on hardware
TWIN_DEMONSTRATION_S = 8.0  # on the twin: its scripted demonstrations' length (a test checks it)
