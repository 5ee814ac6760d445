"""Which bytes of a part file are good: the resume journal."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logits_cli.api.transfer.tuning import JOURNAL_FORMAT
from logits_cli.diskio import read_own_file, replace_file

# -- journal ---------------------------------------------------------------------------------


@dataclass
class Journal:
    """Which bytes of the part file are good. ``filled[i]`` counts the bytes written from the
    start of segment ``i``; a segment is always filled from its start, so resuming is simple."""

    identity: dict[str, Any]
    size: int
    segment_size: int
    filled: list[int]
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def plan(
        cls, identity: dict[str, Any], size: int, segment_size: int, headers: dict[str, str]
    ) -> Journal:
        count = max(1, -(-size // segment_size)) if segment_size else 1
        return cls(identity, size, segment_size, [0] * count, headers)

    def bounds(self, index: int) -> tuple[int, int]:
        start = index * self.segment_size
        return start, min(self.size, start + self.segment_size)

    def missing(self, index: int) -> int:
        start, end = self.bounds(index)
        return end - start - self.filled[index]

    @property
    def done_bytes(self) -> int:
        return sum(self.filled)

    @property
    def complete(self) -> bool:
        return all(self.missing(i) <= 0 for i in range(len(self.filled)))

    def save(self, path: Path) -> None:
        """Atomic replace. No fsync: a kill keeps the page cache, and after a power loss the
        final digest check catches whatever the journal claims wrongly."""
        document = {
            "format": JOURNAL_FORMAT,
            "identity": self.identity,
            "size": self.size,
            "segment_size": self.segment_size,
            "filled": self.filled,
            "headers": self.headers,
        }
        # Through PATH.tmp, never following a symlink planted there, and removed when the
        # write fails (a full disk leaves no .tmp behind).
        replace_file(path, json.dumps(document, sort_keys=True).encode())

    @classmethod
    def load(cls, path: Path) -> Journal | None:
        try:
            document = json.loads(read_own_file(path))  # a symlink is not our journal
            if document.get("format") != JOURNAL_FORMAT:
                return None
            journal = cls(
                identity=dict(document["identity"]),
                size=int(document["size"]),
                segment_size=int(document["segment_size"]),
                filled=[int(n) for n in document["filled"]],
                headers={str(k): str(v) for k, v in document["headers"].items()},
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if journal.size <= 0 or journal.segment_size <= 0:
            return None  # a stream of unknown length cannot be resumed
        expected = Journal.plan(journal.identity, journal.size, journal.segment_size, {})
        if len(journal.filled) != len(expected.filled) or any(
            n < 0 or journal.missing(i) < 0 for i, n in enumerate(journal.filled)
        ):
            return None
        return journal
