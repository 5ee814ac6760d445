"""Idempotency keys: claim, record and replay of responses (docs/protocol.md §4.5)."""

from __future__ import annotations

from logits_cli.store.core import StoreCore
from logits_cli.store.rows import IdempotencyRecord


class IdempotencyMixin(StoreCore):
    """Rows of ``idempotency``."""

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
