"""``Store``: the interface the server codes against.

INTERFACE CONTRACT (written first so store and server can be built in parallel). Method
names, arguments and return types here are fixed; bodies are filled in by the store work.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from logits_cli import models

LOCAL_USER = "local"  # the single implicit user of the embedded backend (protocol.md §1.4)


@dataclass(frozen=True)
class ApiKeyInfo:
    prefix: str  # the first 12 characters of the key ("tml-" + 8), safe to show
    user_id: str
    created: datetime
    revoked: bool


@dataclass(frozen=True)
class FutureRecord:
    request_id: str
    user_id: str
    model_id: str | None
    operation: str  # "create_model" | "save_weights" | "save_weights_for_sampler" | "load_weights"
    status: str  # "pending" | "done" | "failed"
    result: dict[str, Any] | None  # success object, or {"error", "category", "code"}
    created: datetime
    finished: datetime | None


@dataclass(frozen=True)
class IdempotencyRecord:
    body_sha256: str
    state: str  # "running" | "done"
    status: int | None
    body: bytes | None
    content_type: str | None
    location: str | None


@dataclass(frozen=True)
class BlobInfo:
    """What the blob endpoint needs to serve a checkpoint archive."""

    path: Path
    sha256: str
    size: int
    created: datetime


class Store:
    """Opened on a directory: ``meta.sqlite3``, ``blobs/<sha256>``, ``runs/<run>/…``."""

    # -- lifecycle -----------------------------------------------------------------------
    def __init__(self, root: Path, *, max_rank: int = 256) -> None:
        raise NotImplementedError

    @classmethod
    def open(cls, root: Path, **kwargs: Any) -> Store:
        """Create the directory (0700), the schema (migrations via PRAGMA user_version)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def healthy(self) -> bool:
        """Database answers and the blob directory is writable."""
        raise NotImplementedError

    # -- users and API keys (§2.1) --------------------------------------------------------
    def create_api_key(self, user_id: str) -> str:
        """New ``tml-`` + 43 base64url chars key; only its SHA-256 is stored. UsageError on a
        user id outside ``[a-z0-9_-]{1,64}``."""
        raise NotImplementedError

    def list_api_keys(self) -> list[ApiKeyInfo]:
        raise NotImplementedError

    def revoke_api_key(self, prefix: str) -> int:
        """Revoke every key starting with ``prefix`` (at least 8 chars); returns how many.
        NotFoundError when none matches."""
        raise NotImplementedError

    def authenticate(self, key: str) -> str | None:
        """The user id of a valid, unrevoked key, else None (constant-time compare)."""
        raise NotImplementedError

    # -- sessions (§5.1) ------------------------------------------------------------------
    def create_session(
        self,
        user_id: str,
        *,
        tags: list[str],
        user_metadata: dict[str, Any] | None,
        sdk_version: str,
        project_id: str | None,
    ) -> str:
        """Returns a new lowercase UUID4 session id."""
        raise NotImplementedError

    def heartbeat(self, user_id: str, session_id: str) -> None:
        """NotFoundError if unknown or not the caller's."""
        raise NotImplementedError

    # -- runs (§5.3, §5.5) ----------------------------------------------------------------
    def known_base_models(self) -> list[tuple[str, int]]:
        """(model_name, max_context_length) for get_server_capabilities."""
        raise NotImplementedError

    def create_run(
        self,
        user_id: str,
        *,
        session_id: str,
        model_seq_id: int,
        base_model: str,
        lora_config: models.LoraConfig,
        user_metadata: dict[str, Any] | None,
    ) -> str:
        """Create run ``<session_id>:train:<model_seq_id>`` with fresh live state; returns
        its id. Same session+seq with an identical body returns the existing id; with a
        different body raises ConflictError. NotFoundError for an unknown session or base
        model; UsageError(invalid_argument) for a rank above ``max_rank``."""
        raise NotImplementedError

    def get_run(self, viewer: str, run_id: str, *, access_scope: str = "owned") -> models.TrainingRun:
        raise NotImplementedError

    def list_runs(
        self, viewer: str, *, access_scope: str, limit: int, offset: int
    ) -> tuple[list[models.TrainingRun], int]:
        """One page, newest created first (ties by run id), and the scope's total count."""
        raise NotImplementedError

    def get_info(self, user_id: str, run_id: str) -> models.GetInfoResponse:
        raise NotImplementedError

    # -- checkpoints (§5.4, §5.6) ---------------------------------------------------------
    def save_checkpoint(
        self,
        user_id: str,
        run_id: str,
        *,
        kind: str,
        name: str,
        ttl_seconds: int | None,
        overwrite: bool,
        uri_scheme: str,
    ) -> models.Checkpoint:
        """Snapshot the run's live state into a deterministic archive blob (protocol.md §7).
        ConflictError when the name exists and ``overwrite`` is false."""
        raise NotImplementedError

    def load_checkpoint(
        self, user_id: str, run_id: str, *, source: str, optimizer: bool, uri_scheme: str
    ) -> str:
        """Restore a checkpoint (own or public) into the run's live state; returns the source
        URI in ``uri_scheme``. NotFoundError (missing/invisible), UsageError (incompatible
        base model/rank, optimizer from sampler_weights)."""
        raise NotImplementedError

    def weights_info(self, viewer: str, source: str) -> models.WeightsInfoResponse:
        raise NotImplementedError

    def list_run_checkpoints(self, viewer: str, run_id: str) -> list[models.Checkpoint]:
        raise NotImplementedError

    def list_user_checkpoints(
        self, user_id: str, *, limit: int, offset: int
    ) -> tuple[list[models.Checkpoint], int]:
        raise NotImplementedError

    def get_checkpoint(self, viewer: str, run_id: str, kind: str, name: str) -> models.Checkpoint:
        """Owner, or anyone when public; else NotFoundError."""
        raise NotImplementedError

    def delete_checkpoint(self, user_id: str, run_id: str, kind: str, name: str) -> None:
        raise NotImplementedError

    def set_public(self, user_id: str, run_id: str, kind: str, name: str, public: bool) -> None:
        """AlreadyPublicError / AlreadyPrivateError when already in that state."""
        raise NotImplementedError

    def set_ttl(
        self, user_id: str, run_id: str, kind: str, name: str, ttl_seconds: int | None
    ) -> None:
        raise NotImplementedError

    def blob_for(self, run_id: str, kind: str, name: str, sha256: str) -> BlobInfo:
        """For the blob endpoint: the checkpoint must exist, be unexpired, and have archive
        digest ``sha256``; else NotFoundError. No visibility check (§6.1)."""
        raise NotImplementedError

    def sweep(self) -> int:
        """Delete expired checkpoints and unreferenced blobs; returns rows removed."""
        raise NotImplementedError

    # -- futures (§5.2) -------------------------------------------------------------------
    def create_future(
        self,
        user_id: str,
        *,
        operation: str,
        model_id: str | None,
        seq_id: int | None = None,
        body_sha256: str | None = None,
    ) -> tuple[str, bool]:
        """Returns (request_id, created). When (model_id, seq_id, body) repeats an earlier
        request within the retention, returns the earlier id and False (§4.5)."""
        raise NotImplementedError

    def finish_future(self, request_id: str, *, result: dict[str, Any], failed: bool) -> None:
        raise NotImplementedError

    def get_future(self, user_id: str, request_id: str) -> FutureRecord:
        """NotFoundError if unknown or another user's; GoneError past retention."""
        raise NotImplementedError

    # -- idempotency (§4.5) ---------------------------------------------------------------
    def idempotency_claim(
        self, scope: tuple[str, str, str, str], body_sha256: str
    ) -> IdempotencyRecord | None:
        """Atomically: if no record exists, insert a "running" one and return None (the
        caller runs the request). Otherwise return the existing record."""
        raise NotImplementedError

    def idempotency_finish(
        self,
        scope: tuple[str, str, str, str],
        *,
        status: int,
        body: bytes,
        content_type: str | None,
        location: str | None,
    ) -> None:
        raise NotImplementedError

    def idempotency_release(self, scope: tuple[str, str, str, str]) -> None:
        """Drop a running record whose response must not be recorded (5xx, 401, 408, 429)."""
        raise NotImplementedError
