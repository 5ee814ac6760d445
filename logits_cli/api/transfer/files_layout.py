"""The working directory of a per-file download in DEST, and its install (docs/protocol.md
§11.3, docs/ARCHITECTURE.md §3)::

    DEST/.NAME.files/                      0700, ours (refused when not: G6)
    DEST/.NAME.files/data/<file>           the files as they arrive
    DEST/.NAME.files/journal/<digest>.json which bytes of each are good
    DEST/.NAME.files/export.json           the export this download goes through, if any

DEST may be shared: ``.NAME.files`` and its two directories are created by us or refused
(a symlink, another user's, writable by others), so nothing inside them can have been
planted, and no mode of a directory we did not create is changed. A journal is named by a
digest of its file's name, so it fits whatever name (up to 255 bytes) the file has.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from logits_cli import models
from logits_cli.api.extract import install_directory
from logits_cli.api.verify import MANIFEST_NAME
from logits_cli.diskio import (
    fsync_directory,
    fsync_file,
    make_private_dir,
    open_own_dir,
    read_own_file,
    replace_file,
)
from logits_cli.errors import LogitsError

EXPORT_RECORD = "export.json"


def files_part_dir(dest_dir: Path, name: str) -> Path:
    return dest_dir / f".{name}.files"


def make_working_dirs(part_dir: Path) -> tuple[Path, Path]:
    """Create (or accept, when ours) ``part_dir`` and its ``data/`` and ``journal/``."""
    data, journals = part_dir / "data", part_dir / "journal"
    for directory in (part_dir, data, journals):
        make_private_dir(directory)
    return data, journals


def journal_name(file_name: str) -> str:
    """The journal of ``file_name``: a digest of the name (a 255-byte name plus ``.json``
    would not fit a directory entry)."""
    return hashlib.sha256(file_name.encode()).hexdigest()[:32] + ".json"


def pending_export(dest_dir: Path, name: str) -> dict[str, Any] | None:
    """The export recorded by an earlier, unfinished download of ``name`` into ``dest_dir``."""
    try:
        raw = read_own_file(files_part_dir(dest_dir, name) / EXPORT_RECORD)
        record = json.loads(raw)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("export"), str) else None


def record_export(part_dir: Path, export: str | None, document: dict[str, Any]) -> None:
    record = part_dir / EXPORT_RECORD
    if export is None:
        with contextlib.suppress(FileNotFoundError):
            record.unlink()
        return
    replace_file(record, json.dumps(document, sort_keys=True, default=str).encode())


def install_files(data: Path, final: Path, manifest: models.LocalManifest, *, force: bool) -> None:
    """Sync every file, write the manifest last, sync the directory, rename it into place."""
    for member in data.iterdir():
        fsync_file(member)
    fd = os.open(data / MANIFEST_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(manifest.model_dump_json(indent=2).encode())
        out.flush()
        os.fsync(out.fileno())
    # ``data`` is ours (make_working_dirs); re-moded through a descriptor that refuses a
    # symlink, to the mode of an ordinary installed directory.
    directory_fd = open_own_dir(data)
    try:
        os.fchmod(directory_fd, 0o755)
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)
    try:
        install_directory(data, final, force=force)
    except OSError as exc:
        raise LogitsError(f"cannot install {final}: {exc.strerror or exc}") from exc
    fsync_directory(final.parent)
