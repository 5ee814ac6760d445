"""Training runs: creation with fresh live state, lookups, listings (docs/protocol.md §5.3, §5.5),
the removal of a run with the export it was made for (docs/protocol.md Appendix A, A30), and
the owner's deletion of a run (our extension, docs/protocol.md §5.5)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from logits_cli import models
from logits_cli.errors import ConflictError, NotEmptyError, NotFoundError, UsageError
from logits_cli.protocol_rules import check_access_scope
from logits_cli.store.live_state import LiveStateMixin, fresh_key, new_seed, write_state_key
from logits_cli.store.rows import (
    _CKPT,
    _NEW_STATE_PREFIX,
    _RUN,
    _UNEXPIRED,
    _VISIBLE_TO,
    _checkpoint,
    _from_micros,
    _Run,
    _sha256_hex,
    _string_metadata,
)
from logits_cli.uri import EXTERNAL_KIND, KIND_TO_TYPE, validate_run_id

# A run that goes with its export (docs/protocol.md Appendix A, A30): its state was loaded
# from a checkpoint (create-via-load, or a load), so it holds nothing that checkpoint does not;
# its session is finished, so no model request of the session's client can name it again; and
# nothing refers to it any more: no checkpoint (the export was its last), no sampling session
# bound to it, no request in flight. A files-generation client makes one per export (§11.6).
_GOES_WITH_ITS_EXPORT = (
    "r.state_source IS NOT NULL"
    " AND EXISTS (SELECT 1 FROM sessions s WHERE s.id = r.session_id AND s.finished IS NOT NULL)"
    " AND NOT EXISTS (SELECT 1 FROM checkpoints c WHERE c.run_id = r.id)"
    " AND NOT EXISTS (SELECT 1 FROM sampling_sessions p WHERE p.run_id = r.id)"
    " AND NOT EXISTS (SELECT 1 FROM futures f WHERE f.model_id = r.id AND f.status = 'pending')"
)


class RunsMixin(LiveStateMixin):
    """Training runs and their live state."""

    def remove_export_runs(self, run_ids: Iterable[str]) -> int:
        """After exports of ``run_ids`` were deleted or expired: remove the row and the live
        state of each of those runs that goes with its export (``_GOES_WITH_ITS_EXPORT``);
        returns how many went. Only an export's removal triggers this: a run forked with
        create-via-load and never saved stays listed, as on the service."""
        released = 0
        for run_id in dict.fromkeys(run_ids):
            with self._run_lock(run_id):
                with self._db.write() as conn:
                    # Under the lock: a save or a load may have come in meanwhile.
                    row = conn.execute(
                        f"SELECT r.state_source FROM runs r WHERE r.id = ?"
                        f" AND {_GOES_WITH_ITS_EXPORT}",
                        (run_id,),
                    ).fetchone()
                    if row is None:
                        continue
                    conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))
                shutil.rmtree(self.state_dir(run_id), ignore_errors=True)
                # With an object store the archive the state came from was kept for this row.
                if not self._blob_in_use(self._db.connection(), "blobs", row[0]):
                    self._drop_blob("blobs", row[0])
            # After the lock: a waiter that then takes it finds no run (NotFoundError).
            (self.runs_dir / f"{quote(run_id, safe='')}.lock").unlink(missing_ok=True)
            released += 1
        if released:
            from logits_cli.store.exports import gc_export_blobs

            gc_export_blobs(self)  # the files of the exports just removed
        return released

    def delete_run(self, user_id: str, run_id: str, *, with_checkpoints: bool) -> int:
        """Remove an owned run: its row, with ``with_checkpoints`` its checkpoints (their
        archives and export files), and its live state on this machine; the copies other
        machines of a team server keep go with their sweep (``sweep_states``). Returns how
        many unexpired checkpoints went with it. NotEmptyError while one is left without
        ``with_checkpoints``; ConflictError while a request on the run is pending (a save
        that has not taken the run lock yet would fail half-way)."""
        self._owned_run(self._db.connection(), user_id, run_id)  # no lock file for strangers
        with self._run_lock(run_id):
            with self._db.write() as conn:
                run = self._owned_run(conn, user_id, run_id)
                pending = conn.execute(
                    "SELECT operation FROM futures WHERE model_id = ? AND status = 'pending'"
                    " LIMIT 1",
                    (run_id,),
                ).fetchone()
                if pending is not None:
                    raise ConflictError(
                        f"a {pending[0]} request on training run {run_id} is still running;"
                        " delete the run once it has finished"
                    )
                rows = conn.execute(
                    "SELECT kind, sha256, expires_at FROM checkpoints WHERE run_id = ?",
                    (run_id,),
                ).fetchall()
                now = self._now_micros()
                unexpired = sum(1 for _, _, expires in rows if expires is None or expires > now)
                if unexpired and not with_checkpoints:
                    raise NotEmptyError(
                        f"training run {run_id} still has {unexpired} checkpoint"
                        f"{'' if unexpired == 1 else 's'}; delete them with it"
                        " (with_checkpoints=true) or first"
                    )
                state_source = conn.execute(
                    "SELECT state_source FROM runs WHERE id = ?", (run.id,)
                ).fetchone()[0]
                conn.execute("DELETE FROM checkpoints WHERE run_id = ?", (run_id,))
                conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            self._remove_state(self.state_dir(run_id))
            archives = {sha256 for kind, sha256, _ in rows if kind != EXTERNAL_KIND}
            if state_source is not None:  # kept for this row in an object store
                archives.add(state_source)
            conn = self._db.connection()
            for sha256 in archives:
                if not self._blob_in_use(conn, "blobs", sha256):
                    self._drop_blob("blobs", sha256)
        # After the lock: a waiter that then takes it finds no run (NotFoundError).
        (self.runs_dir / f"{quote(run_id, safe='')}.lock").unlink(missing_ok=True)
        if any(kind == EXTERNAL_KIND for kind, _, _ in rows):
            from logits_cli.store.exports import gc_export_blobs

            gc_export_blobs(self)
        return unexpired

    # -- runs (§5.3, §5.5) ----------------------------------------------------------------
    def known_base_models(self) -> list[tuple[str, int]]:
        """(model_name, max_context_length) for get_server_capabilities."""
        return [(shape.name, shape.max_context_length) for shape in self.catalog]

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
        from logits_cli.store.lora import init_state

        if model_seq_id < 0:
            raise UsageError(f"model_seq_id must be >= 0, got {model_seq_id}")
        run_id = f"{session_id}:train:{model_seq_id}"
        metadata = _string_metadata(user_metadata)
        body_sha256 = _sha256_hex(
            json.dumps(
                {"base_model": base_model, "lora": lora_config.model_dump(), "meta": metadata},
                sort_keys=True,
            )
        )
        with self._db.read() as conn:
            owned = conn.execute(
                "SELECT 1 FROM sessions WHERE id = ? AND user_id = ?", (session_id, user_id)
            ).fetchone()
            if owned is None:
                raise NotFoundError(f"session {session_id} not found")
            existing = self._existing_run(conn, run_id, body_sha256)
        if existing is not None:
            return existing
        shape = self.catalog.require(base_model)  # NotFoundError naming the nearest
        if lora_config.rank <= 0:
            raise UsageError(f"LoRA rank must be positive, got {lora_config.rank}")
        if lora_config.rank > self.max_rank:
            raise UsageError(
                f"LoRA rank {lora_config.rank} is above this server's maximum {self.max_rank}"
            )
        if not (lora_config.train_attn or lora_config.train_mlp or lora_config.train_unembed):
            raise UsageError("a LoRA config must train at least one of attn, mlp or unembed")

        # The state is built beside its final place and renamed in while the row is inserted,
        # so a run row never exists without its state.
        # Named after this instance: a start-up sweep removes it only once we are dead.
        owner = self._claim_instance()
        staging = Path(tempfile.mkdtemp(prefix=f"{_NEW_STATE_PREFIX}{owner}-", dir=self.runs_dir))
        try:
            seed = new_seed() if lora_config.seed is None else lora_config.seed
            init_state(staging, base_model, lora_config.model_copy(update={"seed": seed}), shape)
            write_state_key(staging, fresh_key(seed))
            now = self._now_micros()
            with self._db.write() as conn:
                existing = self._existing_run(conn, run_id, body_sha256)
                if existing is not None:
                    return existing
                conn.execute(
                    "INSERT INTO runs (id, session_id, model_seq_id, user_id, base_model,"
                    " lora_rank, train_unembed, train_mlp, train_attn, seed, user_metadata,"
                    " body_sha256, created, last_request_time, state_seed)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run_id,
                        session_id,
                        model_seq_id,
                        user_id,
                        base_model,
                        lora_config.rank,
                        lora_config.train_unembed,
                        lora_config.train_mlp,
                        lora_config.train_attn,
                        lora_config.seed,
                        None if metadata is None else json.dumps(metadata),
                        body_sha256,
                        now,
                        now,
                        seed,
                    ),
                )
                final = self.state_dir(run_id)
                if final.exists():  # left by a create that crashed before its commit
                    shutil.rmtree(final)
                os.replace(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return run_id

    @staticmethod
    def _existing_run(conn: sqlite3.Connection, run_id: str, body_sha256: str) -> str | None:
        row = conn.execute("SELECT body_sha256 FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        if row[0] != body_sha256:
            raise ConflictError(f"run {run_id} already exists with a different configuration")
        return run_id

    @staticmethod
    def _run_scope(access_scope: str) -> str:
        """SQL condition on runs ``r`` for the viewer ``:viewer`` (docs/protocol.md §2.4)."""
        if check_access_scope(access_scope) == "owned":
            return "r.user_id = :viewer"
        return (
            "(r.user_id = :viewer OR EXISTS (SELECT 1 FROM checkpoints c"
            f" WHERE c.run_id = r.id AND c.public = 1 AND {_UNEXPIRED}))"
        )

    def _training_runs(
        self, conn: sqlite3.Connection, viewer: str, runs: list[_Run], now: int
    ) -> list[models.TrainingRun]:
        """TrainingRun objects with the newest checkpoint of each kind the viewer may see."""
        latest: dict[tuple[str, str], models.Checkpoint] = {}
        for run in runs:
            for kind in KIND_TO_TYPE:
                row = conn.execute(
                    f"SELECT {_CKPT} FROM checkpoints c WHERE c.run_id = :run_id"
                    f" AND c.kind = :kind AND {_VISIBLE_TO} ORDER BY c.time DESC, c.name LIMIT 1",
                    {"run_id": run.id, "kind": kind, "viewer": viewer, "now": now},
                ).fetchone()
                if row is not None:
                    latest[(run.id, kind)] = _checkpoint(row)
        return [
            models.TrainingRun.model_construct(
                training_run_id=run.id,
                base_model=run.base_model,
                model_owner=run.user_id,
                is_lora=True,
                corrupted=False,
                lora_rank=run.lora_rank,
                last_request_time=_from_micros(run.last_request_time),
                last_checkpoint=latest.get((run.id, "weights")),
                last_sampler_checkpoint=latest.get((run.id, "sampler_weights")),
                # The run's metadata is its owner's: a public checkpoint shares the
                # checkpoint (with its own metadata), not what the run was made with.
                user_metadata=None
                if run.user_metadata is None or run.user_id != viewer
                else json.loads(run.user_metadata),
            )
            for run in runs
        ]

    def get_run(
        self, viewer: str, run_id: str, *, access_scope: str = "owned"
    ) -> models.TrainingRun:
        validate_run_id(run_id)
        scope = self._run_scope(access_scope)
        now = self._now_micros()
        with self._db.read() as conn:
            row = conn.execute(
                f"SELECT {_RUN} FROM runs r WHERE r.id = :run_id AND {scope}",
                {"run_id": run_id, "viewer": viewer, "now": now},
            ).fetchone()
            if row is None:
                raise NotFoundError(f"training run {run_id} not found")
            return self._training_runs(conn, viewer, [_Run._make(row)], now)[0]

    def list_runs(
        self, viewer: str, *, access_scope: str, limit: int, offset: int
    ) -> tuple[list[models.TrainingRun], int]:
        """One page, newest created first (ties by run id), and the scope's total count."""
        scope = self._run_scope(access_scope)
        now = self._now_micros()
        params = {"viewer": viewer, "now": now, "limit": limit, "offset": offset}
        with self._db.read() as conn:
            total = conn.execute(f"SELECT count(*) FROM runs r WHERE {scope}", params).fetchone()[0]
            rows = conn.execute(
                f"SELECT {_RUN} FROM runs r WHERE {scope}"
                " ORDER BY r.created DESC, r.id LIMIT :limit OFFSET :offset",
                params,
            ).fetchall()
            return self._training_runs(conn, viewer, [_Run._make(row) for row in rows], now), total

    def _owned_run(self, conn: sqlite3.Connection, user_id: str, run_id: str) -> _Run:
        validate_run_id(run_id)
        row = conn.execute(
            f"SELECT {_RUN} FROM runs r WHERE r.id = ? AND r.user_id = ?", (run_id, user_id)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"training run {run_id} not found")
        return _Run._make(row)

    def get_info(self, user_id: str, run_id: str) -> models.GetInfoResponse:
        run = self._owned_run(self._db.connection(), user_id, run_id)
        shape = self.catalog.get(run.base_model)
        return models.GetInfoResponse(
            model_id=run.id,
            model_data=models.ModelData(
                arch=shape.arch if shape else None,
                model_name=run.base_model,
                tokenizer_id=run.base_model,
            ),
            is_lora=True,
            lora_rank=run.lora_rank,
            model_name=run.base_model,
        )
