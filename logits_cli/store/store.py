"""``Store``: the storage engine the server codes against.

Metadata lives in ``meta.sqlite3`` (see ``db.py``), archives in ``blobs/<sha256>``, and each
run's live LoRA state in ``runs/<run id, percent-encoded>/``. Every query filters expired
checkpoints (``expires_at > now``), so an expired checkpoint is gone everywhere the moment it
expires; ``sweep`` reclaims the rows and blobs later.

``lora``, ``archive`` and ``filelock`` are imported inside the methods that need them: they
pull in numpy and safetensors, or cost tens of milliseconds, and the listing paths (the
embedded ``ckpt ls``, with its 300 ms budget) need none of them.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from logits_cli.errors import (
    GoneError,
    NotFoundError,
)
from logits_cli.store.accounts import AccountsMixin
from logits_cli.store.checkpoints import CheckpointsMixin
from logits_cli.store.rows import (  # re-exported: the public surface of store.store
    _BLOB_NAME_RE,
    _CKPT,
    _EPOCH,
    _NEW_STATE_PREFIX,
    _RUN,
    _UNEXPIRED,
    _USER_ID_RE,
    _VISIBLE_TO,
    ACCESS_SCOPES,
    KEY_PREFIX,
    KEY_PREFIX_SHOWN,
    LOCAL_USER,
    MAX_TTL_SECONDS,
    MIN_REVOKE_PREFIX,
    ORPHAN_GRACE_SECONDS,
    STORAGE_FULL_ERRNOS,
    ApiKeyInfo,
    BlobInfo,
    FutureRecord,
    IdempotencyRecord,
    _check_ttl,
    _checkpoint,
    _from_micros,
    _Run,
    _sha256_hex,
    _string_metadata,
    _to_micros,
)


class Store(AccountsMixin, CheckpointsMixin):
    """Opened on a directory: ``meta.sqlite3``, ``blobs/<sha256>``, ``runs/<run>/…``.

    Composed of one mixin per area (core.py and the modules named in its docstring)."""

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
        now = self._now_micros()
        instance = self._claim_instance()  # before the transaction: it may create a file
        with self._db.write() as conn:
            if model_id is not None and seq_id is not None and body_sha256 is not None:
                earlier = conn.execute(
                    "SELECT request_id FROM futures WHERE model_id = ? AND seq_id = ?"
                    " AND body_sha256 = ? AND user_id = ? AND operation = ? AND created > ?"
                    " ORDER BY created DESC LIMIT 1",
                    (
                        model_id,
                        seq_id,
                        body_sha256,
                        user_id,
                        operation,
                        now - self.idempotency_retention * 1_000_000,
                    ),
                ).fetchone()
                if earlier is not None:
                    return earlier[0], False
            request_id = "req_" + secrets.token_hex(16)
            conn.execute(
                "INSERT INTO futures (request_id, user_id, model_id, operation, seq_id,"
                " body_sha256, status, created, instance)"
                " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                (
                    request_id,
                    user_id,
                    model_id,
                    operation,
                    seq_id,
                    body_sha256,
                    now,
                    instance,
                ),
            )
        return request_id, True

    def fail_dead_futures(self) -> int:
        """Start-up recovery: fail the pending futures of dead instances; returns how many."""
        pending = self._db.connection().execute(
            "SELECT request_id, instance FROM futures WHERE status = 'pending'"
        )
        alive: dict[str | None, bool] = {}
        failed = 0
        for request_id, instance in pending.fetchall():
            if instance not in alive:
                alive[instance] = self._instance_alive(instance)
            if not alive[instance]:
                self._abandon_future(request_id)
                failed += 1
        return failed

    def _abandon_future(self, request_id: str) -> None:
        failure = {
            "error": "the server stopped before this request finished; send it again",
            "category": "server",
            "code": "internal",
        }
        with self._db.write() as conn:
            conn.execute(
                "UPDATE futures SET status = 'failed', result = ?, finished = ?"
                " WHERE request_id = ? AND status = 'pending'",
                (json.dumps(failure), self._now_micros(), request_id),
            )

    def finish_future(self, request_id: str, *, result: dict[str, Any], failed: bool) -> None:
        with self._db.write() as conn:
            updated = conn.execute(
                "UPDATE futures SET status = ?, result = ?, finished = ? WHERE request_id = ?",
                (
                    "failed" if failed else "done",
                    json.dumps(result),
                    self._now_micros(),
                    request_id,
                ),
            ).rowcount
        if not updated:
            raise NotFoundError(f"future {request_id} not found")

    def get_future(self, user_id: str, request_id: str) -> FutureRecord:
        """NotFoundError if unknown or another user's; GoneError past retention."""
        row = (
            self._db.connection()
            .execute(
                "SELECT model_id, operation, status, result, created, finished, instance"
                " FROM futures WHERE request_id = ? AND user_id = ?",
                (request_id, user_id),
            )
            .fetchone()
        )
        if row is None:
            raise NotFoundError(f"future {request_id} not found")
        model_id, operation, status, result, created, finished, instance = row
        if status == "pending" and not self._instance_alive(instance):
            # Its process died (crash, kill -9) with the job unfinished: without this the
            # future would answer try_again forever.
            self._abandon_future(request_id)
            return self.get_future(user_id, request_id)
        if finished is not None and (
            self._now_micros() - finished > self.future_retention * 1_000_000 or result is None
        ):
            raise GoneError(f"the result of future {request_id} is no longer kept")
        return FutureRecord(
            request_id=request_id,
            user_id=user_id,
            model_id=model_id,
            operation=operation,
            status=status,
            result=None if result is None else json.loads(result),
            created=_from_micros(created),
            finished=None if finished is None else _from_micros(finished),
        )

    # -- idempotency (§4.5) ---------------------------------------------------------------
    def idempotency_claim(
        self, scope: tuple[str, str, str, str], body_sha256: str
    ) -> IdempotencyRecord | None:
        """Atomically: if no record exists, insert a "running" one and return None (the
        caller runs the request). Otherwise return the existing record. A "running" record
        whose instance has died (crash, kill -9) is taken over: the request runs again."""
        now = self._now_micros()
        instance = self._claim_instance()  # before the transaction: it may create a file
        where = "user_id = ? AND method = ? AND path = ? AND key = ?"
        for _ in range(2):
            with self._db.write() as conn:
                conn.execute(
                    f"DELETE FROM idempotency WHERE {where} AND created <= ?",
                    (*scope, now - self.idempotency_retention * 1_000_000),
                )
                inserted = conn.execute(
                    "INSERT INTO idempotency (user_id, method, path, key, body_sha256, state,"
                    " created, instance) VALUES (?, ?, ?, ?, ?, 'running', ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    (*scope, body_sha256, now, instance),
                ).rowcount
                if inserted:
                    return None
                row = conn.execute(
                    "SELECT body_sha256, state, status, body, content_type, location, instance"
                    f" FROM idempotency WHERE {where}",
                    scope,
                ).fetchone()
            record, owner = IdempotencyRecord(*row[:6]), row[6]
            # Checked outside the transaction: it takes a file lock.
            if record.state != "running" or self._instance_alive(owner):
                return record
            self._release_claim_of(scope, owner)
        return record

    def _release_claim_of(self, scope: tuple[str, str, str, str], owner: str | None) -> None:
        """Drop a "running" record if ``owner`` still holds it (it died without finishing)."""
        with self._db.write() as conn:
            conn.execute(
                "DELETE FROM idempotency WHERE user_id = ? AND method = ? AND path = ? AND key = ?"
                " AND state = 'running' AND instance IS ?",
                (*scope, owner),
            )

    def release_dead_idempotency_claims(self) -> int:
        """Start-up recovery: drop every "running" record of a dead instance; returns how
        many. Records of live instances (other processes sharing the store) stay."""
        owners = [
            owner
            for (owner,) in self._db.connection().execute(
                "SELECT DISTINCT instance FROM idempotency WHERE state = 'running'"
            )
        ]
        released = 0
        for owner in owners:
            if self._instance_alive(owner):
                continue
            with self._db.write() as conn:
                released += conn.execute(
                    "DELETE FROM idempotency WHERE state = 'running' AND instance IS ?", (owner,)
                ).rowcount
        return released

    def idempotency_finish(
        self,
        scope: tuple[str, str, str, str],
        *,
        status: int,
        body: bytes,
        content_type: str | None,
        location: str | None,
    ) -> None:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE idempotency SET state = 'done', status = ?, body = ?, content_type = ?,"
                " location = ? WHERE user_id = ? AND method = ? AND path = ? AND key = ?",
                (status, body, content_type, location, *scope),
            )

    def idempotency_release(self, scope: tuple[str, str, str, str]) -> None:
        """Drop a running record whose response must not be recorded (5xx, 401, 408, 429)."""
        with self._db.write() as conn:
            conn.execute(
                "DELETE FROM idempotency WHERE user_id = ? AND method = ? AND path = ? AND key = ?"
                " AND state = 'running'",
                scope,
            )


# The store's public surface (and the helpers sessions.py and exports.py share).
__all__ = [
    "ACCESS_SCOPES",
    "KEY_PREFIX",
    "KEY_PREFIX_SHOWN",
    "LOCAL_USER",
    "MAX_TTL_SECONDS",
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
    "_check_ttl",
    "_checkpoint",
    "_from_micros",
    "_sha256_hex",
    "_string_metadata",
    "_to_micros",
]
