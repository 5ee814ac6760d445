"""The live state of a run, rebuilt from what its row records (docs/ARCHITECTURE.md §6).

A run's live state changes only when the run is created (a fresh adapter drawn from a seed)
and when a checkpoint is loaded into it (an archive's members, with or without its optimizer
state). The row records which: ``state_seed``, or ``state_source`` (the archive's sha256) and
``state_optimizer``. The state directory carries the same key in ``.state-key``. A process
whose directory lacks the key or holds another one rebuilds the state from the row, drawing
the adapter again from the seed or restoring the archive again (from the bucket, on another
machine). So server processes on several machines, each with its own ``--home``, serve the
same runs, and a load made through one is what a save through another snapshots. In an
object store, an archive a run's state came from is kept while the row names it
(``StoreCore._blob_in_use``).

Runs created before schema 6 record nothing: their state directory is the only copy.

When a session finishes, the state of its runs is freed (``free_session_states``; on the
other machines by their sweep, ``sweep_states``), as the service unloads a session's models
when it ends: a later request on such a run (the archive dialect has no sessions) rebuilds it
from the row, like a process on another machine does.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time as wallclock
from contextlib import suppress
from pathlib import Path
from urllib.parse import unquote

from logits_cli import models
from logits_cli.diskio import fsync_directory, replace_file
from logits_cli.errors import NotFoundError
from logits_cli.store.core import StoreCore
from logits_cli.store.rows import _NEW_STATE_PREFIX, ORPHAN_GRACE_SECONDS

STATE_KEY_FILE = ".state-key"


def new_seed() -> int:
    """The seed of a run created without one: random, but recorded, so any process can draw
    the same fresh adapter again."""
    return secrets.randbits(63)


def fresh_key(seed: int) -> str:
    return f"init:{seed}"


def loaded_key(source: str, optimizer: object) -> str:
    return f"load:{source}:{int(bool(optimizer))}"


def state_key(seed: int | None, source: str | None, optimizer: object) -> str | None:
    """The key of the state a row records; None for a run made before schema 6."""
    if source is not None:
        return loaded_key(source, optimizer)
    return None if seed is None else fresh_key(seed)


def write_state_key(state_dir: Path, key: str) -> None:
    """Written after the state's files are in place (and before the row names the key), so
    a crash in between leaves a directory that does not match its row and is rebuilt."""
    replace_file(state_dir / STATE_KEY_FILE, key.encode(), 0o600, durable=True)


def read_state_key(state_dir: Path) -> str | None:
    try:
        return (state_dir / STATE_KEY_FILE).read_text()
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return None


class LiveStateMixin(StoreCore):
    """Bringing a run's state directory up to the state its row records."""

    def _live_state(self, run_id: str) -> Path:
        """The run's state directory, rebuilt first when it is missing or stale. Callers
        hold the run lock (``_run_lock``)."""
        from logits_cli.store.lora import init_state, restore_state

        state = self.state_dir(run_id)
        row = (
            self._db.connection()
            .execute(
                "SELECT base_model, lora_rank, train_unembed, train_mlp, train_attn,"
                " state_seed, state_source, state_optimizer FROM runs WHERE id = ?",
                (run_id,),
            )
            .fetchone()
        )
        if row is None:
            raise NotFoundError(f"training run {run_id} not found")
        base_model, rank, unembed, mlp, attn, seed, source, optimizer = row
        key = state_key(seed, source, optimizer)
        if key is None or read_state_key(state) == key:
            if not state.is_dir():
                raise NotFoundError(
                    f"the live state of run {run_id} was made before schema 6 on another"
                    " machine; load a checkpoint into the run"
                )
            return state
        owner = self._claim_instance()
        staging = Path(tempfile.mkdtemp(prefix=f"{_NEW_STATE_PREFIX}{owner}-", dir=self.runs_dir))
        try:
            if source is None:
                lora = models.LoraConfig(
                    rank=rank,
                    seed=seed,
                    train_unembed=bool(unembed),
                    train_mlp=bool(mlp),
                    train_attn=bool(attn),
                )
                init_state(staging, base_model, lora, self.catalog.require(base_model))
            else:
                archive = self._local_blob("blobs", source)
                if not archive.is_file():  # local blobs: its checkpoint has been deleted
                    raise NotFoundError(
                        f"the checkpoint run {run_id} was last loaded from is gone, and"
                        " this machine's copy of the run's state is stale; load a"
                        " checkpoint into the run again"
                    )
                restore_state(staging, archive, optimizer=bool(optimizer), owner=owner)
            write_state_key(staging, key)
            if state.exists():
                # Moved aside, not deleted first: the name never points at a partial state.
                stale = self.runs_dir / f"{_NEW_STATE_PREFIX}{owner}-stale-{secrets.token_hex(4)}"
                os.replace(state, stale)
                os.replace(staging, state)
                shutil.rmtree(stale, ignore_errors=True)
            else:
                os.replace(staging, state)
            fsync_directory(self.runs_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return state

    def free_session_states(self, session_id: str) -> int:
        """Remove the state directories of the finished session ``session_id``'s runs whose
        row can rebuild them (schema 6 and later); returns how many were removed."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT r.id FROM runs r JOIN sessions s ON s.id = r.session_id"
                " WHERE r.session_id = ? AND s.finished IS NOT NULL"
                " AND (r.state_seed IS NOT NULL OR r.state_source IS NOT NULL)",
                (session_id,),
            ).fetchall()
        freed = 0
        for (run_id,) in rows:
            with self._run_lock(run_id):
                freed += self._remove_state(self.state_dir(run_id))
        return freed

    def sweep_states(self) -> int:
        """This machine's state directories that need not be here: of runs whose session is
        finished (freed where the finish was served, and here later: several machines each
        keep copies), and, after the grace period, of runs that no longer exist (removed
        with their export on another machine). Returns how many were removed."""
        cutoff = wallclock.time() - ORPHAN_GRACE_SECONDS
        conn = self._db.connection()
        removed = 0
        for entry in os.scandir(self.runs_dir):
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue  # staging directories (swept elsewhere) and run lock files
            run_id = unquote(entry.name)
            row = conn.execute(
                "SELECT s.finished, r.state_seed, r.state_source FROM runs r"
                " LEFT JOIN sessions s ON s.id = r.session_id WHERE r.id = ?",
                (run_id,),
            ).fetchone()
            if row is None:
                with suppress(FileNotFoundError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        removed += self._remove_state(Path(entry.path))
            elif row[0] is not None and (row[1] is not None or row[2] is not None):
                with self._run_lock(run_id):
                    removed += self._remove_state(Path(entry.path))
        return removed

    def _remove_state(self, state: Path) -> int:
        """Remove a state directory: moved aside first, so the run's name never points at a
        partial state, and a crash before the removal leaves a directory the sweep removes."""
        if not state.is_dir():
            return 0
        owner = self._claim_instance()
        aside = self.runs_dir / f"{_NEW_STATE_PREFIX}{owner}-freed-{secrets.token_hex(4)}"
        try:
            os.replace(state, aside)
        except FileNotFoundError:
            return 0  # removed meanwhile by another process of this --home
        shutil.rmtree(aside, ignore_errors=True)
        return 1
