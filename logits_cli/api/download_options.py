"""What a download is asked to do and what it did: shared by the client and the transfer
engine, so the engine never imports the client (docs/ARCHITECTURE.md §1)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from logits_cli import models
from logits_cli.config import max_unsized_download

# Called as bytes arrive: (bytes_done, bytes_total or None). A callback that also has a
# ``phase(name)`` method is told when the download moves on to another phase (the terminal's
# progress bars label themselves with it), see ``report_phase``; one with ``resumed(reused,
# total)`` when a part file is reused, see ``report_resumed``.
ProgressCallback = Callable[[int, int | None], None]
PHASES = ("downloading", "verifying", "extracting", "installing")


def report_phase(progress: ProgressCallback | None, phase: str) -> None:
    """Tell ``progress`` that the download is now ``phase`` (one of ``PHASES``), if it
    listens for phases."""
    assert phase in PHASES
    announce = getattr(progress, "phase", None)
    if announce is not None:
        announce(phase)


def report_resumed(progress: ProgressCallback | None, reused: int, total: int | None) -> None:
    """Tell ``progress`` (if it has a ``resumed(reused, total)`` method) that a part file
    of an earlier, stopped download is kept: ``reused`` bytes are not fetched again."""
    announce = getattr(progress, "resumed", None)
    if announce is not None:
        announce(reused, total)


@dataclass(frozen=True)
class DownloadOptions:
    connections: int = 8
    segment_size: int | None = None  # None: chosen from the size (8–64 MiB; small over ASGI)
    keep_archive: bool = False  # keep DEST/NAME.tar beside the extracted directory
    archive_only: bool = False  # verify and keep DEST/NAME.tar, do not extract
    # Install only the adapter files, not the optimizer state (api/extract.py ADAPTER_FILES);
    # the whole archive is still fetched, since its digest covers all of it.
    adapter_only: bool = False
    force: bool = False  # replace an existing, verified DEST/NAME
    timeout: float | None = None  # overall seconds; None = no limit
    stall_timeout: float = 30.0  # no byte for this long aborts and retries a segment
    # curl's -Y/-y: under this many bytes/s (all connections together), averaged over
    # low_speed_time seconds, aborts and retries the attempt; 0 disables (api/limits.py).
    low_speed_limit: int = 64 * 1024
    low_speed_time: float = 30.0
    lock_wait: float = 0.0  # seconds to wait for another process downloading the same file
    # On the files generation a weights/ checkpoint is exported first, which starts a
    # training session on the service (docs/protocol.md §11.6); done by default, as the
    # official CLI does (the CLI's --no-export turns it off).
    allow_export: bool = True
    # A body whose size no source gives (listing, Content-Length, Content-Range) stops here,
    # and before DEST's free space falls under a reserve (api/transfer/body_bounds.py).
    # The default is LOGITS_MAX_UNSIZED_DOWNLOAD (64 GiB): an environment setting rather
    # than a flag, read once when the options are made, so a bad value is exit 2 up front.
    max_unsized_bytes: int = field(default_factory=max_unsized_download)
    # DEST is a staging directory of ours (``-o FILE.tar``, ``-o -``): created 0700 and
    # refused when it is a symlink or not ours, since it sits beside the user's files.
    private_dest: bool = False


@dataclass(frozen=True)
class DownloadResult:
    checkpoint: models.Checkpoint
    path: Path  # DEST/NAME (or DEST/NAME.tar with archive_only)
    bytes_fetched: int  # bytes actually transferred this time (resume makes it < size)
    skipped: bool  # already present and verified; nothing fetched
    resumed: bool
    repaired: tuple[str, ...] = ()  # what was wrong with the local copy this download replaced


@dataclass(frozen=True)
class FileUrls:
    """One answer of ``…/external_weights_urls``: relative path -> signed URL (§11.3)."""

    urls: Mapping[str, str]
    expires: datetime
