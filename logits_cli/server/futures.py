"""Futures (docs/protocol.md §5.2): run jobs inline or on a worker pool, long-poll for results.

A job is a plain function running store work; it returns the success object or raises.
Its outcome is written to the store, so any process sharing the store can answer a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio.to_thread

from logits_cli.errors import (
    DatabaseUnavailableError,
    JobFailedError,
    LogitsError,
    NotFoundError,
    UnavailableError,
)
from logits_cli.store.recovery import recover
from logits_cli.store.store import FutureRecord, Store

from .responses import storage_full
from .tokens import canonical_json

logger = logging.getLogger("logits.server")

Job = Callable[[], dict[str, Any]]

# While long-polling, also re-read the store this often, so a future finished by another
# process sharing the store is noticed too.
_STORE_RECHECK_SECONDS = 0.5
# How long a finished job keeps trying to record its outcome while the database is away (a
# restart): unrecorded, its future would stay pending under a live owner, never taken over.
_RECORD_OUTCOME_SECONDS = 300.0


def failure_result(exc: BaseException) -> dict[str, Any]:
    """``{"error", "category", "code"}`` for a job that raised."""
    full = storage_full(exc)
    if full is not None:
        exc = full
    if isinstance(exc, JobFailedError):
        return {"error": exc.message, "category": exc.category, "code": exc.failure_code}
    if isinstance(exc, LogitsError):
        category = "user" if 400 <= exc.http_status < 500 else "server"
        return {"error": exc.message, "category": category, "code": exc.code}
    return {"error": "internal server error", "category": "server", "code": "internal"}


def request_digest(body: dict[str, Any]) -> str:
    """Digest of a request body, insensitive to key order (duplicate ``seq_id`` detection)."""
    return hashlib.sha256(canonical_json(body)).hexdigest()


def _deferred(build: Callable[[dict[str, Any]], Job], spec: dict[str, Any]) -> Job:
    """The job ``spec`` names, built when it runs, so a spec that cannot be built fails
    its future like any job that raises."""
    return lambda: build(spec)()


class FutureRunner:
    def __init__(self, store: Store, *, inline: bool, workers: int) -> None:
        self._store = store
        self._inline = inline
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._takeover: threading.Thread | None = None
        self._stop_takeover = threading.Event()
        # Served mode (start_takeover): how a resumable job is built again, to run it once
        # more when the database went away under it (a save whose commit met a restart).
        self._rebuild: Callable[[dict[str, Any]], Job] | None = None

    async def submit(
        self,
        user_id: str,
        *,
        operation: str,
        model_id: str | None,
        job: Job,
        seq_id: int | None = None,
        body_sha256: str | None = None,
        resumable: dict[str, Any] | None = None,
    ) -> str:
        """Create the future and start ``job``, unless it repeats an earlier request (§4.5).

        ``resumable``: the JSON a ``takeover`` builder turns back into ``job``, so that
        another process finishes it if this one dies while it runs."""
        request_id, created = await anyio.to_thread.run_sync(
            lambda: self._store.create_future(
                user_id,
                operation=operation,
                model_id=model_id,
                seq_id=seq_id,
                body_sha256=body_sha256,
                job=resumable,
            )
        )
        if created:
            if self._inline:
                await anyio.to_thread.run_sync(self._execute, request_id, job)
            else:
                self._worker_pool().submit(self._execute, request_id, job, resumable)
        return request_id

    async def wait(self, user_id: str, request_id: str, *, hold: float) -> FutureRecord:
        """The future's record, waiting up to ``hold`` seconds for it to finish."""
        deadline = time.monotonic() + hold
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()
        waiter = (loop, finished)
        with self._lock:
            self._waiters.setdefault(request_id, []).append(waiter)
        try:
            record = await self._read(user_id, request_id)
            while record.status == "pending":
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(finished.wait(), min(remaining, _STORE_RECHECK_SECONDS))
                record = await self._read(user_id, request_id)
            return record
        finally:
            with self._lock:
                waiters = self._waiters.get(request_id, [])
                waiters.remove(waiter)
                if not waiters:
                    self._waiters.pop(request_id, None)

    def start_takeover(self, build: Callable[[dict[str, Any]], Job], interval: float) -> None:
        """Served mode: every ``interval`` seconds, claim the resumable futures of server
        processes that died (``Store.claim_orphaned_futures``) and run them here.

        Start-up recovery runs once more when this process can first tell dead processes
        from live ones (on PostgreSQL a lease after it starts: ``Store.liveness_settled``);
        before that it left everything alone."""
        self._stop_takeover = threading.Event()
        self._rebuild = build

        def loop() -> None:
            recovered = False
            while not self._stop_takeover.wait(interval):
                try:
                    if not recovered and self._store.liveness_settled():
                        recovered = True
                        done = recover(self._store)
                        if done.idempotency_claims or done.futures:
                            logger.info(
                                "released %d idempotency records and failed %d futures of"
                                " dead processes",
                                done.idempotency_claims,
                                done.futures,
                            )
                    claimed = self._store.claim_orphaned_futures()
                except UnavailableError as exc:  # the database restarting: look again later
                    logger.warning("could not look for futures of dead processes: %s", exc)
                    continue
                except Exception as exc:
                    logger.error("taking over futures failed", exc_info=exc)
                    continue
                for request_id, spec in claimed:
                    logger.info("taking over future %s of a dead server process", request_id)
                    self._worker_pool().submit(
                        self._execute, request_id, _deferred(build, spec), spec
                    )

        self._takeover = threading.Thread(target=loop, name="logits-takeover", daemon=True)
        self._takeover.start()

    def close(self) -> None:
        """Finish running jobs and stop the workers (served mode shutdown)."""
        if self._takeover is not None:
            self._stop_takeover.set()
            self._takeover.join()
            self._takeover = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    async def _read(self, user_id: str, request_id: str) -> FutureRecord:
        return await anyio.to_thread.run_sync(self._store.get_future, user_id, request_id)

    def _worker_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="logits-future")
            return self._pool

    def _execute(self, request_id: str, job: Job, spec: dict[str, Any] | None = None) -> None:
        try:
            result, failed = self._run(job, spec), False
        except Exception as exc:
            result, failed = failure_result(exc), True
            if not isinstance(exc, LogitsError) and result["code"] == "internal":
                logger.error("future %s failed unexpectedly", request_id, exc_info=exc)
        self._record(request_id, result, failed)
        self._notify(request_id)

    def _run(self, job: Job, spec: dict[str, Any] | None) -> dict[str, Any]:
        """``job``'s result. A resumable job that met its database away (PostgreSQL
        restarting while a save wrote its archive) runs again, as a takeover would run it
        (a checkpoint committed meanwhile is its own), for up to ``_RECORD_OUTCOME_SECONDS``
        with pauses of up to 5 s: the client polling it would otherwise be told to send a
        save again that this live process can finish."""
        deadline = time.monotonic() + _RECORD_OUTCOME_SECONDS
        pause = 0.25
        while True:
            try:
                return job()
            except DatabaseUnavailableError as exc:
                rebuild = self._rebuild
                if (
                    spec is None
                    or rebuild is None
                    or time.monotonic() + pause > deadline
                    or self._stop_takeover.is_set()
                ):
                    raise
                logger.warning("a job met its database away, running it again: %s", exc)
                job = _deferred(rebuild, spec)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    def _record(self, request_id: str, result: dict[str, Any], failed: bool) -> None:
        """Write the outcome, retrying for ``_RECORD_OUTCOME_SECONDS`` while the store
        fails (its database restarting) with pauses of up to 5 s."""
        deadline = time.monotonic() + _RECORD_OUTCOME_SECONDS
        pause = 0.25
        while True:
            try:
                self._store.finish_future(request_id, result=result, failed=failed)
                return
            except NotFoundError:
                return  # the future's row is gone (swept): nobody is waiting for it
            except Exception as exc:
                if time.monotonic() + pause > deadline or self._stop_takeover.is_set():
                    logger.error(
                        "could not record the outcome of future %s", request_id, exc_info=exc
                    )
                    return
                logger.warning("recording the outcome of future %s: %s", request_id, exc)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    def _notify(self, request_id: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(request_id, []))
        for loop, finished in waiters:
            # RuntimeError: that poll's event loop has closed meanwhile.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(finished.set)
