"""``logits server start --workers N``: one parent process supervising N server processes.

The parent binds the listening socket, checks the store once (a broken setting is one line
and exit 2 here, not N tracebacks), then forks the workers, which all accept on that socket.
It keeps the socket open, so connections wait in its backlog while a dead worker is
replaced. Deaths are logged and replaced, at most ``restart_limit(N)`` in any
``RESTART_WINDOW_SECONDS``: past that something is wrong with every worker (a crash loop),
and the parent stops the rest and exits non-zero with one line.

Workers die with their parent, however it dies (a ``kill -9`` cannot be caught): on Linux the
kernel sends them SIGTERM (``PR_SET_PDEATHSIG``), and everywhere each watches a pipe whose
only write end the parent holds; end of file means the parent is gone. Either way the worker
stops as on SIGTERM, and exits by force after ``ORPHAN_GRACE_SECONDS``.

A killed worker's pending saves are finished by a sibling or its replacement: each worker's
store takes over the resumable futures of store instances that died
(``FutureRunner.start_takeover``), and a replacement's start-up recovery fails the rest.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import wait as wait_for_sentinels
from multiprocessing.process import BaseProcess
from pathlib import Path

from logits_cli.errors import LogitsError

from .serve import build_server, check_store
from .settings import ServerSettings

logger = logging.getLogger("logits.server")

RESTART_WINDOW_SECONDS = 60.0
# Stopping: uvicorn's own graceful shutdown takes up to 5 s, then running saves finish.
STOP_TIMEOUT_SECONDS = 30.0
ORPHAN_GRACE_SECONDS = 30.0
_POLL_SECONDS = 0.5  # how soon the parent notices a stop signal
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def restart_limit(workers: int) -> int:
    """Restarts allowed in any ``RESTART_WINDOW_SECONDS``: one per worker, at least 3, so a
    small pool survives a few unrelated deaths while a crash loop ends within seconds."""
    return max(workers, 3)


class WorkersGaveUp(LogitsError):
    """Workers died faster than the restart limit; the server stopped (exit 1)."""


def serve_workers(
    home: Path,
    settings: ServerSettings,
    host: str,
    port: int,
    *,
    database: str | None,
    workers: int,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """``workers`` server processes accepting on one listening socket. Each opens its own
    store after the fork (connections are never shared across processes); they share the
    database and the store directory, so any of them answers any request."""
    try:
        listener = socket.create_server((host, port))
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise LogitsError(f"cannot listen on {host}:{port}: {reason}") from None
    try:
        check_store(home, settings, database=database)
        listener.set_inheritable(True)
        parent_alive_read, parent_alive_write = os.pipe()

        def start(slot: int) -> BaseProcess:
            worker = multiprocessing.get_context("fork").Process(
                target=_worker_main,
                args=(home, settings, listener, database, os.getpid()),
                kwargs={"watch_fd": parent_alive_read, "parent_fd": parent_alive_write},
                name=f"logits-server-{slot}",
            )
            worker.start()
            return worker

        supervisor = Supervisor(start, workers)
        if on_ready is not None:
            on_ready()
        logger.info("serving on %s:%d with %d processes", host, listener.getsockname()[1], workers)
        supervisor.run()
    finally:
        listener.close()


class Supervisor:
    """Keeps ``count`` workers running until a stop signal, or until they die too often."""

    def __init__(self, start: Callable[[int], BaseProcess], count: int) -> None:
        self._start = start
        self._count = count
        self._limit = restart_limit(count)
        self._restarts: collections.deque[float] = collections.deque()
        self._stop_signal: int | None = None
        self.workers: dict[int, BaseProcess] = {}

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT (then return), or raise ``WorkersGaveUp``."""
        previous = {
            sig: signal.signal(sig, self._on_stop) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for slot in range(self._count):
                self.workers[slot] = self._start(slot)
            while self._stop_signal is None:
                sentinels = {worker.sentinel: slot for slot, worker in self.workers.items()}
                for ready in wait_for_sentinels(list(sentinels), timeout=_POLL_SECONDS):
                    if self._stop_signal is None:
                        self._replace(sentinels[ready])  # type: ignore[index]
            logger.info(
                "stopping %d processes (%s)", self._count, signal.Signals(self._stop_signal).name
            )
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_stop(self, signum: int, _frame: object) -> None:
        # From a terminal the workers got the same SIGINT; from `kill` only this process
        # did: it stops them either way (a second SIGTERM to a stopping worker is harmless).
        self._stop_signal = signum

    def _replace(self, slot: int) -> None:
        dead = self.workers[slot]
        dead.join()
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > RESTART_WINDOW_SECONDS:
            self._restarts.popleft()
        how = describe_exit(dead.exitcode)
        if len(self._restarts) >= self._limit:
            raise WorkersGaveUp(
                f"worker process {slot} (pid {dead.pid}) {how}, the {self._limit + 1}th death"
                f" within {RESTART_WINDOW_SECONDS:.0f} s; stopped the server"
            )
        self._restarts.append(now)
        self.workers[slot] = self._start(slot)
        logger.error(
            "worker process %d (pid %s) %s; started pid %s in its place (%d of %d restarts"
            " allowed per %.0f s)",
            slot,
            dead.pid,
            how,
            self.workers[slot].pid,
            len(self._restarts),
            self._limit,
            RESTART_WINDOW_SECONDS,
        )

    def _stop_all(self) -> None:
        """SIGTERM to every worker, SIGKILL to those still running after the timeout."""
        alive = [worker for worker in self.workers.values() if worker.is_alive()]
        for worker in alive:
            if worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for worker in alive:
            worker.join(max(0.0, deadline - time.monotonic()))
        for worker in alive:
            if worker.is_alive():
                logger.error(
                    "worker pid %s did not stop in %.0f s; killed", worker.pid, STOP_TIMEOUT_SECONDS
                )
                worker.kill()
                worker.join()


def describe_exit(exitcode: int | None) -> str:
    """``was killed by SIGKILL`` / ``exited with code 1``, as multiprocessing reports it."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with code {exitcode}"


def _worker_main(
    home: Path,
    settings: ServerSettings,
    listener: socket.socket,
    database: str | None,
    parent_pid: int,
    *,
    watch_fd: int,
    parent_fd: int,
) -> None:
    """A forked worker: serve on ``listener`` until stopped or orphaned."""
    # The parent's handlers were inherited by the fork; a worker stops quietly instead (also
    # when uvicorn re-raises the signal it shut down for, so the store is closed after it).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_quietly)
    os.close(parent_fd)  # else this process would keep the pipe open for itself
    die_with_parent(parent_pid)
    try:
        built = build_server(home, settings, *listener.getsockname()[:2], database=database)
    except LogitsError as exc:  # the parent checked the store: this one is transient
        logger.error("worker process could not start: %s", exc.message)
        sys.exit(1)

    def stop() -> None:
        built.server.should_exit = True

    watch_parent(watch_fd, stop)
    built.run(sockets=[listener])


def _exit_quietly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux for SIGTERM when the parent dies; exit now if it died already."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the pipe watched by ``watch_parent`` still stops this worker
    if os.getppid() != parent_pid:  # it died before the prctl: no signal will come
        sys.exit(0)


def watch_parent(fd: int, stop: Callable[[], None]) -> None:
    """When ``fd`` (the pipe only the parent writes) reaches end of file, the parent is
    gone: ``stop()`` the server, and exit by force if it has not stopped in time."""

    def watch() -> None:
        while os.read(fd, 1):
            pass  # the parent never writes: only end of file returns
        logger.error("worker pid %d: the parent process is gone; stopping", os.getpid())
        stop()
        time.sleep(ORPHAN_GRACE_SECONDS)
        logger.error("still running %.0f s after the parent died; exiting", ORPHAN_GRACE_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="logits-parent-watch", daemon=True).start()
