"""Archive blobs: lookups for the blob endpoint, reclaiming unreferenced blobs, and the TTL sweep
of expired checkpoints, finished futures, idempotency records and crash leftovers.
"""

from __future__ import annotations

import os
import shutil
import time as wallclock
from contextlib import suppress

from logits_cli.errors import NotFoundError
from logits_cli.store.core import StoreCore
from logits_cli.store.rows import (
    _BLOB_NAME_RE,
    _NEW_STATE_PREFIX,
    _UNEXPIRED,
    ORPHAN_GRACE_SECONDS,
    BlobInfo,
    _from_micros,
)


class BlobsMixin(StoreCore):
    """Archive blobs under ``blobs/<sha256>`` and the sweep."""

    def blob_for(self, run_id: str, kind: str, name: str, sha256: str) -> BlobInfo:
        """For the blob endpoint: the checkpoint must exist, be unexpired, and have archive
        digest ``sha256``; else NotFoundError. No visibility check (§6.1)."""
        row = (
            self._db.connection()
            .execute(
                "SELECT c.size_bytes, c.time FROM checkpoints c WHERE c.run_id = :run_id"
                f" AND c.kind = :kind AND c.name = :name AND c.sha256 = :sha256 AND {_UNEXPIRED}",
                {
                    "run_id": run_id,
                    "kind": kind,
                    "name": name,
                    "sha256": sha256,
                    "now": self._now_micros(),
                },
            )
            .fetchone()
        )
        if row is None or not _BLOB_NAME_RE.fullmatch(sha256):
            raise NotFoundError(f"checkpoint {kind}/{name} not found in run {run_id}")
        path = self._local_blob("blobs", sha256)
        if not path.is_file():
            raise NotFoundError(f"checkpoint {kind}/{name} not found in run {run_id}")
        return BlobInfo(path=path, sha256=sha256, size=row[0], created=_from_micros(row[1]))

    def _discard_blob(self, sha256: str) -> None:
        """Remove a blob no checkpoint row references any more. Callers hold the run lock of
        the checkpoint that used it: only that run can produce a blob with the same digest
        (the archive names the checkpoint), so no save can be adopting it meanwhile."""
        if not self._blob_in_use(self._db.connection(), "blobs", sha256):
            self._drop_blob("blobs", sha256)

    def sweep(self) -> int:
        """Delete expired checkpoints and unreferenced blobs; returns rows removed."""
        now = self._now_micros()
        expired = (
            self._db.connection()
            .execute(
                "SELECT run_id, id, sha256 FROM checkpoints"
                " WHERE expires_at IS NOT NULL AND expires_at <= ? ORDER BY run_id",
                (now,),
            )
            .fetchall()
        )
        by_run: dict[str, list[tuple[int, str]]] = {}
        for run_id, row_id, sha256 in expired:
            by_run.setdefault(run_id, []).append((row_id, sha256))
        removed = 0
        for run_id, rows in by_run.items():
            with self._run_lock(run_id):
                with self._db.write() as conn:
                    for row_id, _ in rows:
                        # Re-checked: the TTL may have been extended since the first query.
                        removed += conn.execute(
                            "DELETE FROM checkpoints WHERE id = ? AND expires_at <= ?",
                            (row_id, now),
                        ).rowcount
                for _, sha256 in rows:
                    self._discard_blob(sha256)

        with self._db.write() as conn:
            gone_after = now - self.future_retention * 1_000_000
            conn.execute(
                "UPDATE futures SET result = NULL WHERE finished < ? AND result IS NOT NULL",
                (gone_after,),
            )
            # The row itself is kept a while longer, so a late poll still gets 410, not 404.
            conn.execute(
                "DELETE FROM futures WHERE finished < ?",
                (gone_after - self.idempotency_retention * 1_000_000,),
            )
            conn.execute(
                "DELETE FROM idempotency WHERE created < ?",
                (now - self.idempotency_retention * 1_000_000,),
            )
        self._remove_orphans()
        return removed

    def _remove_orphans(self) -> None:
        """Blobs no row references and leftovers of crashed saves and creates."""
        cutoff = wallclock.time() - ORPHAN_GRACE_SECONDS
        conn = self._db.connection()
        for entry in os.scandir(self.blobs_dir):
            # Another process may be sweeping or deleting the same files.
            with suppress(FileNotFoundError):
                if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                    continue
                if _BLOB_NAME_RE.fullmatch(entry.name):
                    # With an object store the directory is only a cache: the bucket holds
                    # every committed blob, and a later load fetches it again.
                    in_use = self._blob_in_use(conn, "blobs", entry.name)
                    if not in_use or self.objects is not None:
                        os.unlink(entry.path)
                elif entry.name.startswith(".") and entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
        for entry in os.scandir(self.runs_dir):
            with suppress(FileNotFoundError):
                if entry.name.startswith(_NEW_STATE_PREFIX) and entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry.path, ignore_errors=True)
        if self.objects is not None:
            self._remove_orphan_objects("blobs", cutoff)
        if self.instances_dir.is_dir():
            for entry in os.scandir(self.instances_dir):
                self._instance_alive(entry.name.removesuffix(".lock"))  # removes dead ones
