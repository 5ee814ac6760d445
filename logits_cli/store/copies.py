"""``copy_weights`` (docs/protocol.md §11.4): a new checkpoint with the same files in a run
of the caller. Exports share their content-addressed blobs; archives are rebuilt, because an
archive names its checkpoint (docs/protocol.md §7.4)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from logits_cli.errors import NotFoundError, UsageError
from logits_cli.protocol_rules import check_ttl
from logits_cli.store.exports import _insert_export, export_files
from logits_cli.store.store import Store
from logits_cli.uri import EXTERNAL_KIND, format_path


def copy_checkpoint(
    store: Store,
    user_id: str,
    *,
    source: str,
    destination_run: str,
    ttl_seconds: int | None,
    uri_scheme: str,
) -> str:
    """A new checkpoint of the same kind and name with the same files in ``destination_run``
    (the caller's); the source is the caller's own or public. Returns its URI."""
    from logits_cli.store.archive import build_archive
    from logits_cli.store.lora import restore_state

    check_ttl(ttl_seconds)
    with store._db.read() as conn:
        ref, checkpoint, origin = store._source_checkpoint(conn, user_id, source)
        target = store._owned_run(conn, user_id, destination_run)
    if (origin.base_model, origin.lora_rank) != (target.base_model, target.lora_rank):
        raise UsageError(
            f"run {destination_run} ({target.base_model}, rank {target.lora_rank}) cannot hold"
            f" a copy of {source} ({origin.base_model}, rank {origin.lora_rank})"
        )
    if ref.run_id == destination_run:
        raise UsageError(f"{source} is already in run {destination_run}")
    tinker_path = format_path(destination_run, ref.kind, ref.name, uri_scheme)
    with store._run_lock(destination_run):
        conn = store._db.connection()
        try:
            store._check_name_free(conn, destination_run, ref.kind, ref.name, False)
        except Exception:
            raise UsageError(
                f"checkpoint {ref.kind}/{ref.name} already exists in run {destination_run}"
            ) from None
        if ref.kind == EXTERNAL_KIND:
            files = export_files(store, user_id, ref.run_id, ref.name)
            _insert_export(
                store,
                user_id,
                destination_run,
                ref.name,
                [(f.path, None, f.sha256, f.size) for f in files],
                tinker_path=tinker_path,
                ttl_seconds=ttl_seconds,
            )
            return tinker_path
        scratch = Path(tempfile.mkdtemp(prefix=".copy-", dir=store.runs_dir))
        try:
            restore_state(
                scratch,
                store._local_blob("blobs", str(checkpoint.sha256)),
                optimizer=ref.kind == "weights",
            )
            created = store._now()
            _, sha256, size = build_archive(
                scratch, store.blobs_dir, kind=ref.kind, tinker_path=tinker_path, created=created
            )
        except FileNotFoundError as exc:
            raise NotFoundError(f"checkpoint {source} not found") from exc
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        from logits_cli.store.store import _to_micros

        try:
            store._publish_blob("blobs", sha256)
        except BaseException:
            store._discard_blob(sha256)
            raise

        time = _to_micros(created)
        expires_at = None if ttl_seconds is None else time + ttl_seconds * 1_000_000
        with store._db.write() as conn:
            old = store._check_name_free(conn, destination_run, ref.kind, ref.name, False)
            if old is not None:
                conn.execute("DELETE FROM checkpoints WHERE id = ?", (old[0],))
            conn.execute(
                "INSERT INTO checkpoints (run_id, user_id, kind, name, tinker_path, time,"
                " expires_at, public, size_bytes, sha256) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
                (
                    destination_run,
                    user_id,
                    ref.kind,
                    ref.name,
                    tinker_path,
                    time,
                    expires_at,
                    size,
                    sha256,
                ),
            )
    return tinker_path
