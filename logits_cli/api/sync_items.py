"""What a sync is asked to do and what it reports (``SyncOptions``, ``SyncItem``,
``SyncSummary``), and where it keeps each checkpoint in its directory, with the check that
a local copy is current. The layout and the rules are described in ``sync.py``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError

from logits_cli import models
from logits_cli.api.download_options import DownloadOptions
from logits_cli.api.verify import MANIFEST_NAME
from logits_cli.errors import UsageError
from logits_cli.uri import CheckpointRef

STATUSES = ("planned", "downloaded", "present", "skipped", "failed", "not_started", "pruned")
INCOMPLETE_STATUSES = frozenset({"failed", "not_started"})


@dataclass(frozen=True)
class SyncOptions:
    runs: tuple[str, ...] = ()  # empty: every run of the caller
    kind: str | None = None  # a kind or a checkpoint type (``training``, ``sampler``)
    latest: int | None = None  # only the newest N per run and kind
    since: datetime | None = None  # only checkpoints created at or after this
    jobs: int = 2  # concurrent downloads
    dry_run: bool = False
    max_duration: float | None = None  # seconds the whole run may take (see the module doc)
    lock_wait: float = 0.0  # seconds to wait for another sync to finish
    prune_local: bool = False
    # weights/ on the files generation need an export, which starts a training session on
    # the service (docs/protocol.md §11.6). Made by default, as the official CLI's download
    # does: a mirror that silently leaves out every weights/ checkpoint is the worse
    # surprise. Off, those items are skipped with ``needs_export`` (the CLI exits 10).
    export: bool = True
    download: DownloadOptions = field(default_factory=DownloadOptions)


@dataclass
class SyncItem:
    tinker_path: str
    status: str  # one of STATUSES
    bytes_fetched: int = 0
    local_path: str | None = None
    error: str | None = None
    # "download" or "prune": a dry run reports a planned prune as status "planned".
    action: str = "download"
    # What was wrong with a local copy that is downloaded again (missing or resized files).
    repaired: list[str] = field(default_factory=list)
    # Skipped only because exports are off (``SyncOptions.export``): an export would fetch it.
    needs_export: bool = False

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SyncSummary:
    items: list[SyncItem]
    elapsed_s: float
    dest: Path | None = None
    dry_run: bool = False

    def counts(self) -> dict[str, int]:
        """Every status, zeros included, so the JSON keys never change."""
        counts = dict.fromkeys(STATUSES, 0)
        for item in self.items:
            counts[item.status] += 1
        return counts

    @property
    def bytes_fetched(self) -> int:
        return sum(item.bytes_fetched for item in self.items)

    @property
    def not_exported(self) -> int:
        """Items skipped only because exports are off: the mirror lacks them on purpose."""
        return sum(item.needs_export for item in self.items)

    @property
    def incomplete(self) -> bool:
        """Some requested checkpoint failed or was not started: exit 8."""
        return any(item.status in INCOMPLETE_STATUSES for item in self.items)

    def to_json(self) -> dict[str, Any]:
        return {
            "dest": str(self.dest) if self.dest is not None else None,
            "dry_run": self.dry_run,
            "counts": self.counts(),
            "bytes_fetched": self.bytes_fetched,
            "not_exported": self.not_exported,
            "elapsed_s": round(self.elapsed_s, 3),
            "items": [item.to_json() for item in self.items],
        }


# Called as bytes arrive for one checkpoint: (tinker_path, bytes_done, bytes_total or None).
SyncProgressCallback = Callable[[str, int, int | None], None]
# Called once per item when it reaches its final status (for one log line per checkpoint).
ItemCallback = Callable[[SyncItem], None]


def run_dirname(run_id: str) -> str:
    encoded = quote(run_id, safe="")
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded


def checkpoint_dir(dest: Path, ref: CheckpointRef) -> Path:
    """Where sync keeps one checkpoint under ``dest``."""
    return dest / run_dirname(ref.run_id) / ref.kind / ref.name


def read_own_manifest(directory: Path) -> models.LocalManifest | None:
    """Our manifest in ``directory``, or None when there is none or it is not ours."""
    try:
        return models.LocalManifest.model_validate_json((directory / MANIFEST_NAME).read_bytes())
    except (OSError, ValidationError):
        return None


def identity(ref: CheckpointRef) -> tuple[str, str, str]:
    # Both URI schemes name the same checkpoint (docs/protocol.md §3.1).
    return (ref.run_id, ref.kind, ref.name)


def own_copy(directory: Path) -> tuple[models.LocalManifest, CheckpointRef] | None:
    """Our manifest in ``directory`` and the checkpoint it names, or None."""
    manifest = read_own_manifest(directory)
    if manifest is None:
        return None
    try:
        return manifest, CheckpointRef.parse(manifest.tinker_path, any_kind=True)
    except UsageError:
        return None


def is_current(manifest: models.LocalManifest, checkpoint: models.Checkpoint) -> bool:
    """Whether our local copy (``manifest``) is the listed ``checkpoint`` as it is now."""
    if checkpoint.sha256 is not None and manifest.archive_sha256 is not None:
        return manifest.archive_sha256 == checkpoint.sha256
    # Deployments that list no digest, and per-file downloads (no archive): an overwrite
    # always changes the creation time.
    if manifest.archive_sha256 is None:
        return manifest.created == checkpoint.time  # _plan has matched run, kind and name
    return manifest.created == checkpoint.time and (
        checkpoint.size_bytes is None or manifest.archive_size == checkpoint.size_bytes
    )
