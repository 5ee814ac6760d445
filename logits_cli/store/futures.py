"""Futures: the records of asynchronous requests, their results, and recovery of futures whose
process died (docs/protocol.md §5.2).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from logits_cli.errors import GoneError, NotFoundError
from logits_cli.store.core import StoreCore
from logits_cli.store.rows import FutureRecord, _from_micros


class FuturesMixin(StoreCore):
    """Rows of ``futures``."""

    # -- futures (§5.2) -------------------------------------------------------------------
    def create_future(
        self,
        user_id: str,
        *,
        operation: str,
        model_id: str | None,
        seq_id: int | None = None,
        body_sha256: str | None = None,
        job: dict[str, Any] | None = None,
    ) -> tuple[str, bool]:
        """Returns (request_id, created). When (model_id, seq_id, body) repeats an earlier
        request within the retention, returns the earlier id and False (§4.5).

        ``job``: what another process needs to run the job again should this one die
        (``claim_orphaned_futures``); None for jobs that cannot be taken over."""
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
                " body_sha256, status, created, instance, job)"
                " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
                (
                    request_id,
                    user_id,
                    model_id,
                    operation,
                    seq_id,
                    body_sha256,
                    now,
                    instance,
                    None if job is None else json.dumps(job),
                ),
            )
        return request_id, True

    def fail_dead_futures(self) -> int:
        """Start-up recovery: fail the pending futures of dead instances that no other
        process can take over (``job`` NULL); returns how many."""
        pending = self._db.connection().execute(
            "SELECT request_id, instance FROM futures WHERE status = 'pending' AND job IS NULL"
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

    def claim_orphaned_futures(self) -> list[tuple[str, dict[str, Any]]]:
        """Take over the resumable pending futures whose instance has died: each is claimed
        by one compare-and-set on its ``instance``, so of several live processes exactly
        one runs it again. Returns (request_id, job) of those this instance now owns."""
        me = self._claim_instance()
        pending = (
            self._db.connection()
            .execute(
                "SELECT request_id, instance, job FROM futures"
                " WHERE status = 'pending' AND job IS NOT NULL AND (instance IS NULL"
                " OR instance <> ?)",
                (me,),
            )
            .fetchall()
        )
        alive: dict[str | None, bool] = {}
        claimed = []
        for request_id, instance, job in pending:
            if instance not in alive:
                alive[instance] = self._instance_alive(instance)
            if alive[instance]:
                continue
            same_owner = "instance IS NULL" if instance is None else "instance = ?"
            with self._db.write() as conn:
                taken = conn.execute(
                    "UPDATE futures SET instance = ? WHERE request_id = ? AND status = 'pending'"
                    f" AND {same_owner}",
                    (me, request_id) if instance is None else (me, request_id, instance),
                ).rowcount
            if taken == 1:
                claimed.append((request_id, json.loads(job)))
        return claimed

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
                "SELECT model_id, operation, status, result, created, finished, instance,"
                " job IS NOT NULL FROM futures WHERE request_id = ? AND user_id = ?",
                (request_id, user_id),
            )
            .fetchone()
        )
        if row is None:
            raise NotFoundError(f"future {request_id} not found")
        model_id, operation, status, result, created, finished, instance, resumable = row
        if status == "pending" and not resumable and not self._instance_alive(instance):
            # Its process died (crash, kill -9) with the job unfinished: without this the
            # future would answer try_again forever. A resumable job (a save) stays pending:
            # a live server process takes it over (claim_orphaned_futures).
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
