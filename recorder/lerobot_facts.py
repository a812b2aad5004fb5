"""What the store knows about an episode that LeRobot's format has no field for (the outcome, tags,
notes, the twin's reward, labeled segments), kept through an export and import as one JSON column of
the dataset's own episode metadata (`meta/episodes`), which LeRobot's readers leave alone."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from recorder.catalogue import Catalogue, EpisodeRecord, Segment

FACTS_COLUMN = "rig/facts"


@dataclass(frozen=True)
class EpisodeFacts:
    outcome: str | None = None
    twin_reward: int | None = None
    tags: tuple[str, ...] = ()
    notes: str = ""
    segments: tuple[Segment, ...] = ()

    @classmethod
    def of(cls, record: EpisodeRecord, segments: Sequence[Segment]) -> EpisodeFacts:
        plain = tuple(Segment(s.label, s.start_step, s.end_step) for s in segments)
        return cls(record.outcome, record.twin_reward, tuple(record.tags), record.notes or "", plain)

    def to_json(self) -> str:
        return json.dumps(
            {
                "outcome": self.outcome,
                "twin_reward": self.twin_reward,
                "tags": list(self.tags),
                "notes": self.notes,
                "segments": [[s.label, s.start_step, s.end_step] for s in self.segments],
            }
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EpisodeFacts:
        """The facts an exported row carries; none for a dataset from elsewhere."""
        text = row.get(FACTS_COLUMN)
        if not text:
            return cls()
        value = json.loads(text)
        segments = tuple(Segment(label, start, end) for label, start, end in value.get("segments", ()))
        return cls(
            value.get("outcome"),
            value.get("twin_reward"),
            tuple(value.get("tags", ())),
            value.get("notes") or "",
            segments,
        )

    def restore_labels(self, catalogue: Catalogue, episode_id: int) -> None:
        """The tags and notes (the outcome, reward and segments go in with `finish_episode`)."""
        if self.tags:
            catalogue.set_tags(episode_id, self.tags)
        if self.notes:
            catalogue.set_notes(episode_id, self.notes)
