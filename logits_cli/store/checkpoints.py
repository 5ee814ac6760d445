"""Checkpoints: save (a deterministic archive of the live state), load, listings, lookups,
visibility and TTL (docs/protocol.md §5.4, §5.6).
"""

from __future__ import annotations

import sqlite3

from logits_cli import models
from logits_cli.errors import ConflictError, NotFoundError, UsageError
from logits_cli.protocol_rules import check_ttl
from logits_cli.store.blobs import BlobsMixin
from logits_cli.store.live_state import STATE_KEY_FILE, loaded_key, write_state_key
from logits_cli.store.rows import (
    _CKPT,
    _RUN,
    _UNEXPIRED,
    _VISIBLE_TO,
    _checkpoint,
    _Run,
    _to_micros,
)
from logits_cli.store.runs import RunsMixin
from logits_cli.uri import (
    EXTERNAL_KIND,
    SCHEMES,
    CheckpointRef,
    format_path,
    validate_kind,
    validate_name,
)


class CheckpointsMixin(RunsMixin, BlobsMixin):
    """Checkpoints of runs: rows in ``checkpoints``, archives in ``blobs/``."""

    # -- checkpoints (§5.4, §5.6) ---------------------------------------------------------
    def save_checkpoint(
        self,
        user_id: str,
        run_id: str,
        *,
        kind: str,
        name: str,
        ttl_seconds: int | None,
        overwrite: bool,
        uri_scheme: str,
    ) -> models.Checkpoint:
        """Snapshot the run's live state into a deterministic archive blob (docs/protocol.md §7).
        ConflictError when the name exists and ``overwrite`` is false."""
        from logits_cli.store.archive import build_archive

        validate_kind(kind)
        validate_name(name)
        check_ttl(ttl_seconds)
        if uri_scheme not in SCHEMES:
            raise UsageError(f"uri_scheme must be 'logits' or 'tinker', got {uri_scheme!r}")
        self._owned_run(self._db.connection(), user_id, run_id)
        with self._run_lock(run_id):
            # Checked before the (possibly long) archive build, and again when committing.
            self._check_name_free(self._db.connection(), run_id, kind, name, overwrite)
            created = self._now()
            tinker_path = format_path(run_id, kind, name, uri_scheme)
            _, sha256, size = build_archive(
                self._live_state(run_id),
                self.blobs_dir,
                owner=self._claim_instance(),
                kind=kind,
                tinker_path=tinker_path,
                created=created,
            )
            time = _to_micros(created)
            expires_at = None if ttl_seconds is None else time + ttl_seconds * 1_000_000
            replaced: str | None = None
            try:
                self._publish_blob("blobs", sha256)
                with self._db.write() as conn:
                    old = self._check_name_free(conn, run_id, kind, name, overwrite)
                    if old is not None:
                        conn.execute("DELETE FROM checkpoints WHERE id = ?", (old[0],))
                        replaced = old[1]
                    conn.execute(
                        "INSERT INTO checkpoints (run_id, user_id, kind, name, tinker_path, time,"
                        " expires_at, public, size_bytes, sha256)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
                        (run_id, user_id, kind, name, tinker_path, time, expires_at, size, sha256),
                    )
                    conn.execute(
                        "UPDATE runs SET last_request_time = ? WHERE id = ?", (time, run_id)
                    )
            except BaseException:
                self._discard_blob(sha256)
                raise
            if replaced is not None and replaced != sha256:
                self._discard_blob(replaced)
        return _checkpoint((kind, name, tinker_path, time, expires_at, False, size, sha256))

    def _check_name_free(
        self, conn: sqlite3.Connection, run_id: str, kind: str, name: str, overwrite: bool
    ) -> tuple[int, str] | None:
        """The (row id, sha256) a save replaces: an expired row, or any row when
        ``overwrite``. ConflictError when an unexpired one exists without ``overwrite``."""
        row = conn.execute(
            "SELECT id, sha256, expires_at FROM checkpoints WHERE run_id = ? AND kind = ? AND name = ?",
            (run_id, kind, name),
        ).fetchone()
        if row is None:
            return None
        row_id, sha256, expires_at = row
        unexpired = expires_at is None or expires_at > self._now_micros()
        if unexpired and not overwrite:
            raise ConflictError(f"checkpoint {kind}/{name} already exists in run {run_id}")
        return row_id, sha256

    def _source_checkpoint(
        self, conn: sqlite3.Connection, viewer: str, source: str
    ) -> tuple[CheckpointRef, models.Checkpoint, _Run]:
        """A checkpoint URI the viewer may read (own or public), with its run."""
        ref = CheckpointRef.parse(source)
        row = conn.execute(
            f"SELECT {_CKPT}, {_RUN} FROM checkpoints c JOIN runs r ON r.id = c.run_id"
            f" WHERE c.run_id = :run_id AND c.kind = :kind AND c.name = :name AND {_VISIBLE_TO}",
            {
                "run_id": ref.run_id,
                "kind": ref.kind,
                "name": ref.name,
                "viewer": viewer,
                "now": self._now_micros(),
            },
        ).fetchone()
        if row is None:
            raise NotFoundError(f"checkpoint {source} not found")
        return ref, _checkpoint(row), _Run._make(row[8:])

    def load_checkpoint(
        self, user_id: str, run_id: str, *, source: str, optimizer: bool, uri_scheme: str
    ) -> str:
        """Restore a checkpoint (own or public) into the run's live state; returns the source
        URI in ``uri_scheme``. NotFoundError (missing/invisible), UsageError (incompatible
        base model/rank, optimizer from sampler_weights)."""
        from logits_cli.store.lora import restore_state

        if uri_scheme not in SCHEMES:
            raise UsageError(f"uri_scheme must be 'logits' or 'tinker', got {uri_scheme!r}")
        with self._db.read() as conn:
            target = self._owned_run(conn, user_id, run_id)
            ref, checkpoint, origin = self._source_checkpoint(conn, user_id, source)
        if origin.base_model != target.base_model:
            raise UsageError(
                f"checkpoint {source} is for base model {origin.base_model}, "
                f"run {run_id} uses {target.base_model}"
            )
        if origin.lora_rank != target.lora_rank:
            raise UsageError(
                f"checkpoint {source} has LoRA rank {origin.lora_rank}, "
                f"run {run_id} has rank {target.lora_rank}"
            )
        if (origin.train_attn, origin.train_mlp, origin.train_unembed) != (
            target.train_attn,
            target.train_mlp,
            target.train_unembed,
        ):
            raise UsageError(f"checkpoint {source} adapts other modules than run {run_id}")
        if optimizer and ref.kind != "weights":
            raise UsageError(
                f"checkpoint {source} holds no optimizer state; load it without the optimizer"
            )
        sha256 = str(checkpoint.sha256)
        with self._run_lock(run_id):
            state = self.state_dir(run_id)
            # The key goes first: files replaced under the old key would pass for it.
            (state / STATE_KEY_FILE).unlink(missing_ok=True)
            try:
                restore_state(
                    state,
                    self._local_blob("blobs", sha256),
                    optimizer=optimizer,
                    owner=self._claim_instance(),
                )
            except FileNotFoundError as exc:  # deleted or overwritten since the lookup
                raise NotFoundError(f"checkpoint {source} not found") from exc
            write_state_key(state, loaded_key(sha256, optimizer))
            with self._db.write() as conn:
                # In an object store the archive now stays while this row names it, even if
                # its checkpoint is deleted: another machine may rebuild the state from it.
                # A checkpoint deleted meanwhile may have taken its blob along: then the load
                # fails, and the directory (keyed for it) is rebuilt from the row at next use.
                pinned = conn.execute(
                    "UPDATE runs SET last_request_time = ?, state_source = ?, state_optimizer = ?"
                    " WHERE id = ? AND EXISTS (SELECT 1 FROM checkpoints WHERE sha256 = ?)",
                    (self._now_micros(), sha256, optimizer, run_id, sha256),
                ).rowcount
                if not pinned:
                    raise NotFoundError(f"checkpoint {source} not found")
        return format_path(ref.run_id, ref.kind, ref.name, uri_scheme)

    def weights_info(self, viewer: str, source: str) -> models.WeightsInfoResponse:
        with self._db.read() as conn:
            _, _, run = self._source_checkpoint(conn, viewer, source)
        return models.WeightsInfoResponse(
            base_model=run.base_model,
            is_lora=True,
            lora_rank=run.lora_rank,
            train_unembed=bool(run.train_unembed),
            train_mlp=bool(run.train_mlp),
            train_attn=bool(run.train_attn),
        )

    def list_run_checkpoints(self, viewer: str, run_id: str) -> list[models.Checkpoint]:
        with self._db.read() as conn:
            owner = conn.execute("SELECT user_id FROM runs WHERE id = ?", (run_id,)).fetchone()
            if owner is None:
                raise NotFoundError(f"training run {run_id} not found")
            rows = conn.execute(
                f"SELECT {_CKPT} FROM checkpoints c WHERE c.run_id = :run_id AND {_VISIBLE_TO}"
                " ORDER BY c.time DESC, c.kind, c.name",
                {"run_id": run_id, "viewer": viewer, "now": self._now_micros()},
            ).fetchall()
        if not rows and owner[0] != viewer:
            raise NotFoundError(f"training run {run_id} not found")
        return [_checkpoint(row) for row in rows]

    def list_user_checkpoints(
        self, user_id: str, *, limit: int, offset: int
    ) -> tuple[list[models.Checkpoint], int]:
        params = {"user": user_id, "now": self._now_micros(), "limit": limit, "offset": offset}
        with self._db.read() as conn:
            total = conn.execute(
                f"SELECT count(*) FROM checkpoints c WHERE c.user_id = :user AND {_UNEXPIRED}",
                params,
            ).fetchone()[0]
            rows = conn.execute(
                f"SELECT {_CKPT} FROM checkpoints c WHERE c.user_id = :user AND {_UNEXPIRED}"
                " ORDER BY c.time DESC, c.tinker_path LIMIT :limit OFFSET :offset",
                params,
            ).fetchall()
        return [_checkpoint(row) for row in rows], total

    def get_checkpoint(self, viewer: str, run_id: str, kind: str, name: str) -> models.Checkpoint:
        """Owner, or anyone when public; else NotFoundError."""
        validate_kind(kind)
        validate_name(name)
        row = (
            self._db.connection()
            .execute(
                f"SELECT {_CKPT} FROM checkpoints c WHERE c.run_id = :run_id AND c.kind = :kind"
                f" AND c.name = :name AND {_VISIBLE_TO}",
                {
                    "run_id": run_id,
                    "kind": kind,
                    "name": name,
                    "viewer": viewer,
                    "now": self._now_micros(),
                },
            )
            .fetchone()
        )
        if row is None:
            raise NotFoundError(f"checkpoint {kind}/{name} not found in run {run_id}")
        return _checkpoint(row)

    def _owned_checkpoint(
        self, conn: sqlite3.Connection, user_id: str, run_id: str, kind: str, name: str
    ) -> tuple[int, str, int]:
        """(row id, sha256, public) of an unexpired checkpoint the user owns."""
        validate_kind(kind)
        validate_name(name)
        row = conn.execute(
            "SELECT c.id, c.sha256, c.public FROM checkpoints c WHERE c.run_id = :run_id"
            f" AND c.kind = :kind AND c.name = :name AND c.user_id = :user AND {_UNEXPIRED}",
            {
                "run_id": run_id,
                "kind": kind,
                "name": name,
                "user": user_id,
                "now": self._now_micros(),
            },
        ).fetchone()
        if row is None:
            raise NotFoundError(f"checkpoint {kind}/{name} not found in run {run_id}")
        row_id, sha256, public = row
        return row_id, sha256, public

    def delete_checkpoint(self, user_id: str, run_id: str, kind: str, name: str) -> None:
        # Checked before locking too, so requests for unknown runs leave no lock files behind.
        self._owned_checkpoint(self._db.connection(), user_id, run_id, kind, name)
        with self._run_lock(run_id):
            with self._db.write() as conn:
                row_id, sha256, _ = self._owned_checkpoint(conn, user_id, run_id, kind, name)
                conn.execute("DELETE FROM checkpoints WHERE id = ?", (row_id,))
            self._discard_blob(sha256)
        if kind == EXTERNAL_KIND:
            self.remove_export_runs([run_id])  # a run made only for it goes with it

    def sweep(self) -> int:
        expiring = self._db.connection().execute(
            "SELECT DISTINCT run_id FROM checkpoints WHERE kind = ? AND expires_at <= ?",
            (EXTERNAL_KIND, self._now_micros()),
        )
        export_runs = [row[0] for row in expiring]
        removed = super().sweep()
        self.remove_export_runs(export_runs)  # runs made only for exports that expired
        self.sweep_states()
        return removed

    def set_public(self, user_id: str, run_id: str, kind: str, name: str, public: bool) -> bool:
        """Whether it changed: making a checkpoint what it already is succeeds (idempotent,
        docs/protocol.md §5.6.5 and Appendix A, A31)."""
        with self._db.write() as conn:
            row_id, _, current = self._owned_checkpoint(conn, user_id, run_id, kind, name)
            if bool(current) == public:
                return False
            conn.execute("UPDATE checkpoints SET public = ? WHERE id = ?", (public, row_id))
            return True

    def set_ttl(
        self, user_id: str, run_id: str, kind: str, name: str, ttl_seconds: int | None
    ) -> None:
        check_ttl(ttl_seconds)
        with self._db.write() as conn:
            row_id, _, _ = self._owned_checkpoint(conn, user_id, run_id, kind, name)
            expires_at = (
                None if ttl_seconds is None else self._now_micros() + ttl_seconds * 1_000_000
            )
            conn.execute("UPDATE checkpoints SET expires_at = ? WHERE id = ?", (expires_at, row_id))
