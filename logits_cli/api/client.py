"""``LogitsClient``: the async API core every command wraps.

INTERFACE CONTRACT (written first so the CLI, the transfer engine and the client itself can
be built in parallel). Names, arguments and return types are fixed; bodies are filled in by
the API-core work. The client never prints: progress goes through callbacks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logits_cli import models
from logits_cli.config import Settings
from logits_cli.uri import CheckpointRef

# Called while a future is pending, with the seconds waited so far (for a spinner).
PendingCallback = Callable[[float], None]
# Called as bytes arrive: (bytes_done, bytes_total or None).
ProgressCallback = Callable[[int, int | None], None]


@dataclass(frozen=True)
class DownloadOptions:
    connections: int = 8
    segment_size: int | None = None  # None: chosen from the size (8–64 MiB; small over ASGI)
    keep_archive: bool = False  # keep DEST/NAME.tar beside the extracted directory
    archive_only: bool = False  # verify and keep DEST/NAME.tar, do not extract
    force: bool = False  # replace an existing, verified DEST/NAME
    timeout: float | None = None  # overall seconds; None = no limit
    stall_timeout: float = 30.0  # no byte for this long aborts and retries a segment


@dataclass(frozen=True)
class DownloadResult:
    checkpoint: models.Checkpoint
    path: Path  # DEST/NAME (or DEST/NAME.tar with archive_only)
    bytes_fetched: int  # bytes actually transferred this time (resume makes it < size)
    skipped: bool  # already present and verified; nothing fetched
    resumed: bool


class LogitsClient:
    """Open with ``async with open_client(settings) as client``."""

    settings: Settings
    embedded: bool

    # -- service --------------------------------------------------------------------------
    async def health(self) -> models.HealthResponse:
        raise NotImplementedError

    async def capabilities(self) -> models.ServerCapabilities:
        raise NotImplementedError

    # -- runs -----------------------------------------------------------------------------
    async def create_run(
        self,
        base_model: str,
        *,
        rank: int = 32,
        seed: int | None = None,
        train_attn: bool = True,
        train_mlp: bool = True,
        train_unembed: bool = True,
        user_metadata: dict[str, str] | None = None,
        on_pending: PendingCallback | None = None,
        timeout: float | None = None,
    ) -> models.TrainingRun:
        """create_session + create_model future; returns the new run."""
        raise NotImplementedError

    async def get_run(self, run_id: str, *, access_scope: str = "owned") -> models.TrainingRun:
        raise NotImplementedError

    def iter_runs(
        self, *, access_scope: str = "owned", page_size: int = 100
    ) -> AsyncIterator[models.TrainingRun]:
        """Every run, following the cursor (§5.5)."""
        raise NotImplementedError

    async def get_info(self, run_id: str) -> models.GetInfoResponse:
        raise NotImplementedError

    # -- checkpoints ----------------------------------------------------------------------
    async def list_checkpoints(self, run_id: str) -> list[models.Checkpoint]:
        """One run's checkpoints, newest first (§5.6.1)."""
        raise NotImplementedError

    def iter_all_checkpoints(
        self, *, page_size: int = 1000
    ) -> AsyncIterator[models.Checkpoint]:
        """The caller's checkpoints across all runs (§5.6.2), following the cursor."""
        raise NotImplementedError

    async def resolve(self, ref: CheckpointRef) -> CheckpointRef:
        """Replace an ``@latest`` name with the newest checkpoint of that kind in the run;
        NotFoundError if the run has none. Other refs are returned unchanged."""
        raise NotImplementedError

    async def get_checkpoint(self, ref: CheckpointRef) -> models.Checkpoint:
        """One checkpoint (``@latest`` resolved); NotFoundError when absent."""
        raise NotImplementedError

    async def save(
        self,
        run_id: str,
        name: str,
        *,
        sampler: bool = False,
        ttl_seconds: int | None = None,
        overwrite: bool = False,
        on_pending: PendingCallback | None = None,
        timeout: float | None = None,
    ) -> models.Checkpoint:
        """save_weights (or save_weights_for_sampler), wait for the future, return the new
        checkpoint. ConflictError when the name exists without ``overwrite``."""
        raise NotImplementedError

    async def load(
        self,
        run_id: str,
        ref: CheckpointRef,
        *,
        with_optimizer: bool = False,
        on_pending: PendingCallback | None = None,
        timeout: float | None = None,
    ) -> str:
        """load_weights future; returns the loaded path as the server reports it."""
        raise NotImplementedError

    async def weights_info(self, ref: CheckpointRef) -> models.WeightsInfoResponse:
        raise NotImplementedError

    async def delete(self, ref: CheckpointRef) -> None:
        raise NotImplementedError

    async def publish(self, ref: CheckpointRef) -> bool:
        """True if it changed, False if it was already public."""
        raise NotImplementedError

    async def unpublish(self, ref: CheckpointRef) -> bool:
        """True if it changed, False if it was already private."""
        raise NotImplementedError

    async def set_ttl(self, ref: CheckpointRef, ttl_seconds: int | None) -> None:
        raise NotImplementedError

    async def archive_url(self, ref: CheckpointRef) -> models.CheckpointArchiveUrlResponse:
        """Signed URL and expiry (302 or JSON form, §5.6.4)."""
        raise NotImplementedError

    # -- transfer -------------------------------------------------------------------------
    async def download(
        self,
        ref: CheckpointRef,
        dest_dir: Path,
        *,
        options: DownloadOptions | None = None,
        progress: ProgressCallback | None = None,
    ) -> DownloadResult:
        """Fetch, verify and extract one checkpoint into ``dest_dir/NAME`` (design.md §5)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> LogitsClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


def open_client(settings: Settings) -> LogitsClient:
    """The one constructor: remote (base URL + key) or embedded (ASGI transport over the
    reference server on ``settings.store_dir``, auth off)."""
    raise NotImplementedError
