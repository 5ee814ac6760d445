"""Start-up recovery after a crash: what a dead server process left behind.

A process killed mid-request leaves idempotency records "running" (which would block every
retry of that request for ``idempotency_retention``), futures "pending", and temp files of
saves, creates and loads (a killed save leaves a partial archive as large as the state).
Each of these names the store instance that made it; an instance is dead when nobody holds
its lock file, or on PostgreSQL when its lease has run out (``Store.instance_alive``,
liveness.py). Only what dead instances own is removed, so a server starting beside live ones
sharing the store never touches their work. On PostgreSQL a process cannot tell the dead for
a lease after it starts; the takeover loop runs this again once it can
(``FutureRunner.start_takeover``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from logits_cli.store.lora import RESTORE_PREFIX, TEMP_SUFFIX
from logits_cli.store.store import Store

logger = logging.getLogger("logits.store")

_OWNER = r"(?P<owner>[0-9a-f]{16})"
# ``.NAME.OWNER.XXXX.tmp`` (lora.temp_path_beside)
_OWNED_TEMP_FILE = re.compile(rf"\..+\.{_OWNER}\.[^.]+{re.escape(TEMP_SUFFIX)}")
_OWNED_NEW_STATE = re.compile(rf"\.new-{_OWNER}-.+")  # Store.create_run staging directory
_OWNED_RESTORE = re.compile(rf"{re.escape(RESTORE_PREFIX)}{_OWNER}-.+")  # lora.restore_state


@dataclass(frozen=True)
class Recovered:
    idempotency_claims: int
    futures: int
    temp_paths: int
    temp_bytes: int


def recover(store: Store) -> Recovered:
    """Release and remove what dead instances left behind; safe beside live instances."""
    claims = store.release_dead_idempotency_claims()
    futures = store.fail_dead_futures()
    paths, size = sweep_dead_temp_files(store)
    return Recovered(claims, futures, paths, size)


def _remove(path: Path) -> int:
    """Bytes freed by removing ``path`` (a file or a directory tree); 0 if already gone."""
    size = 0
    with suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            for parent, _, names in os.walk(path):
                for name in names:
                    with suppress(OSError):
                        size += os.lstat(os.path.join(parent, name)).st_size
            shutil.rmtree(path, ignore_errors=True)
        else:
            size = path.lstat().st_size
            path.unlink()
    return size


def sweep_dead_temp_files(store: Store) -> tuple[int, int]:
    """Remove temp files and staging directories owned by dead instances; returns (paths
    removed, bytes freed)."""
    alive: dict[str, bool] = {}

    def dead(match: re.Match[str] | None) -> bool:
        if match is None:
            return False
        owner = match["owner"]
        if owner not in alive:
            alive[owner] = store.instance_alive(owner)
        return not alive[owner]

    candidates = [
        path for path in _entries(store.blobs_dir) if dead(_OWNED_TEMP_FILE.fullmatch(path.name))
    ]
    for path in _entries(store.runs_dir):
        if dead(_OWNED_NEW_STATE.fullmatch(path.name)):
            candidates.append(path)
        elif not path.name.startswith(".") and path.is_dir():  # a run's live state
            candidates += [
                inner
                for inner in _entries(path)
                if dead(_OWNED_RESTORE.fullmatch(inner.name))
                or dead(_OWNED_TEMP_FILE.fullmatch(inner.name))
            ]
    freed = sum(_remove(path) for path in candidates)
    if candidates:
        logger.info(
            "removed %d temp files of crashed server processes (%d bytes)", len(candidates), freed
        )
    return len(candidates), freed


def _entries(directory: Path) -> list[Path]:
    try:
        return [Path(entry.path) for entry in os.scandir(directory)]
    except (FileNotFoundError, NotADirectoryError):
        return []
