"""Rows, records and small helpers shared by every area of the store.

Times are integer microseconds since the Unix epoch (UTC) in the database; these helpers
convert them, build ``models.Checkpoint`` objects from rows, and hold the SQL fragments the
checkpoint and run queries share.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from logits_cli import models
from logits_cli.uri import KIND_TO_TYPE

LOCAL_USER = "local"  # the single implicit user of the embedded backend (docs/protocol.md §1.4)

KEY_PREFIX = "tml-"
KEY_PREFIX_SHOWN = 12  # "tml-" + 8 characters: enough to tell keys apart, useless to an attacker
MIN_REVOKE_PREFIX = 8
# Blobs and state directories that no row references are only reclaimed once they are this
# old (file modification time), so a save or create in flight never loses its files.
ORPHAN_GRACE_SECONDS = 3600

_USER_ID_RE = re.compile(r"[a-z0-9_-]{1,64}")
_BLOB_NAME_RE = re.compile(r"[0-9a-f]{64}")
_NEW_STATE_PREFIX = ".new-"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A write that fails with these is a full disk or quota, not a bug (server: HTTP 507).
STORAGE_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


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


def _to_micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _sha256_hex(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _string_metadata(user_metadata: dict[str, Any] | None) -> dict[str, str] | None:
    """TrainingRun.user_metadata values must be strings [SDK]; others are JSON-encoded."""
    if user_metadata is None:
        return None
    return {
        str(key): value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        for key, value in user_metadata.items()
    }


# -- rows -----------------------------------------------------------------------------------

# Columns of a checkpoint row, in the order ``_checkpoint`` reads them.
_CKPT = "c.kind, c.name, c.tinker_path, c.time, c.expires_at, c.public, c.size_bytes, c.sha256"
_UNEXPIRED = "(c.expires_at IS NULL OR c.expires_at > :now)"
_VISIBLE_TO = f"{_UNEXPIRED} AND (c.user_id = :viewer OR c.public = 1)"


def _checkpoint(row: tuple[Any, ...]) -> models.Checkpoint:
    kind, name, tinker_path, time, expires_at, public, size_bytes, sha256 = row[:8]
    # Rows were validated on the way in; skipping pydantic validation keeps a listing of
    # thousands of checkpoints cheap.
    return models.Checkpoint.model_construct(
        checkpoint_id=f"{kind}/{name}",
        checkpoint_type=KIND_TO_TYPE[kind],
        time=_from_micros(time),
        tinker_path=tinker_path,
        size_bytes=size_bytes,
        public=bool(public),
        expires_at=None if expires_at is None else _from_micros(expires_at),
        sha256=sha256,
    )


class _Run(NamedTuple):
    id: str
    user_id: str
    base_model: str
    lora_rank: int
    train_unembed: int
    train_mlp: int
    train_attn: int
    user_metadata: str | None
    body_sha256: str
    created: int
    last_request_time: int


_RUN = ", ".join(f"r.{field}" for field in _Run._fields)
