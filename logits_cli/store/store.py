"""``Store``: the storage engine the server codes against.

Metadata lives in ``meta.sqlite3`` (see ``db.py``), archives in ``blobs/<sha256>``, and each
run's live LoRA state in ``runs/<run id, percent-encoded>/``. Every query filters expired
checkpoints (``expires_at > now``), so an expired checkpoint is gone everywhere the moment it
expires; ``sweep`` reclaims the rows and blobs later.

The class is composed of one mixin per area, each in its own module over ``core.StoreCore``
(directory, database, clock, run locks, instance liveness): ``accounts`` (users, API keys,
session rows), ``live_state`` (a run's state rebuilt from its row), ``runs``,
``checkpoints``, ``blobs`` (blob lookups and the sweep), ``futures`` and ``idempotency``;
``rows`` holds the records and helpers they share. ``sessions.py`` and ``exports.py`` add
the SDK 0.38 operations as functions over a ``Store``.

``lora``, ``archive`` and ``filelock`` are imported inside the methods that need them: they
pull in numpy and safetensors, or cost tens of milliseconds, and the listing paths (the
embedded ``ckpt ls``, with its 300 ms budget) need none of them.
"""

from __future__ import annotations

from logits_cli.store.accounts import AccountsMixin
from logits_cli.store.checkpoints import CheckpointsMixin
from logits_cli.store.futures import FuturesMixin
from logits_cli.store.idempotency import IdempotencyMixin
from logits_cli.store.rows import (  # re-exported: the public surface of store.store
    _BLOB_NAME_RE,
    _CKPT,
    _EPOCH,
    _NEW_STATE_PREFIX,
    _RUN,
    _UNEXPIRED,
    _USER_ID_RE,
    _VISIBLE_TO,
    KEY_PREFIX,
    KEY_PREFIX_SHOWN,
    LOCAL_USER,
    MIN_REVOKE_PREFIX,
    ORPHAN_GRACE_SECONDS,
    STORAGE_FULL_ERRNOS,
    ApiKeyInfo,
    BlobInfo,
    FutureRecord,
    IdempotencyRecord,
    _checkpoint,
    _from_micros,
    _Run,
    _sha256_hex,
    _string_metadata,
    _to_micros,
)


class Store(AccountsMixin, CheckpointsMixin, FuturesMixin, IdempotencyMixin):
    """Opened on a directory: ``meta.sqlite3``, ``blobs/<sha256>``, ``runs/<run>/…``."""


# The store's public surface (and the helpers sessions.py and exports.py share).
__all__ = [
    "KEY_PREFIX",
    "KEY_PREFIX_SHOWN",
    "LOCAL_USER",
    "MIN_REVOKE_PREFIX",
    "ORPHAN_GRACE_SECONDS",
    "STORAGE_FULL_ERRNOS",
    "_BLOB_NAME_RE",
    "_CKPT",
    "_EPOCH",
    "_NEW_STATE_PREFIX",
    "_RUN",
    "_UNEXPIRED",
    "_USER_ID_RE",
    "_VISIBLE_TO",
    "ApiKeyInfo",
    "BlobInfo",
    "FutureRecord",
    "IdempotencyRecord",
    "Store",
    "_Run",
    "_checkpoint",
    "_from_micros",
    "_sha256_hex",
    "_string_metadata",
    "_to_micros",
]
