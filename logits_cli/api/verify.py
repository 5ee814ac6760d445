"""Offline re-check of downloaded checkpoints against their manifest (``logits ckpt verify``).

No network: every file the manifest lists is re-hashed and compared (size and sha256).
Files the manifest does not list are ignored, so users may add notes beside the weights.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from logits_cli import models
from logits_cli.errors import IntegrityError

MANIFEST_NAME = ".logits-checkpoint.json"
HASH_CHUNK = 4 * 1024 * 1024
MAX_NAME_BYTES = 255  # the usual file-name limit; longer names cannot be created anyway


@dataclass(frozen=True)
class VerifyResult:
    path: Path
    ok: bool
    problems: list[str] = field(default_factory=list)
    tinker_path: str | None = None


def check_member_name(name: str) -> None:
    """Refuse any name that could leave the checkpoint directory or clash with our manifest
    (docs/protocol.md §7.5): members are plain files at the archive root. Control
    characters (C0, DEL, C1) are refused too: a name holding an escape sequence or a newline
    acts on the terminal of whoever lists the directory, and splits the lines of ``ls`` or
    ``find`` (issue 21 G8). The message shows the name with ``repr``, which escapes them."""
    if not name or name in (".", MANIFEST_NAME) or len(name.encode()) > MAX_NAME_BYTES:
        raise IntegrityError(f"unsafe archive member name {name!r}")
    for forbidden in ("/", "\\", ".."):
        if forbidden in name:
            raise IntegrityError(f"unsafe archive member name {name!r}")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name):
        raise IntegrityError(f"unsafe archive member name {name!r} (a control character)")


def read_manifest(directory: Path) -> models.LocalManifest:
    """The manifest of a downloaded checkpoint; IntegrityError when absent or unreadable."""
    try:
        raw = (directory / MANIFEST_NAME).read_bytes()
    except FileNotFoundError:
        raise IntegrityError(
            f"{directory}: no {MANIFEST_NAME}; not a downloaded checkpoint"
        ) from None
    try:
        return models.LocalManifest.model_validate_json(raw)
    except ValidationError:
        raise IntegrityError(f"{directory}: {MANIFEST_NAME} is unreadable") from None


def file_sha256(path: Path) -> tuple[int, str]:
    """(size, sha256 hex) of a file, read in large chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def damaged_files(path: Path, manifest: models.LocalManifest) -> list[str]:
    """The cheap check ``download`` and ``sync`` make of a copy they find in place: every
    file the manifest lists exists as a regular file of the listed size. Names and sizes
    only (one ``lstat`` each), no re-hash: that is ``verify``'s job."""
    problems: list[str] = []
    for name, expected in sorted(manifest.files.items()):
        try:
            check_member_name(name)
            status = os.lstat(path / name)
        except (IntegrityError, OSError):
            problems.append(f"{name} missing")
            continue
        if not stat.S_ISREG(status.st_mode):
            problems.append(f"{name} missing")
        elif status.st_size != expected.size:
            problems.append(f"{name} has {status.st_size} bytes, expected {expected.size}")
    return problems


def missing_content(manifest: models.LocalManifest, *, adapter_only: bool) -> list[str]:
    """What a copy lacks for the download asked for: an ``--adapter-only`` extract of a
    training archive has no optimizer state, so a full download replaces it, while
    ``adapter_only`` is satisfied by it and by a full copy alike. A files-generation copy
    (no archive) is adapter-only because that is all such a deployment gives: it is whole."""
    partial = (
        manifest.content == "adapter-only"
        and manifest.checkpoint_type == "training"
        and manifest.archive_sha256 is not None
    )
    if partial and not adapter_only:
        return ["optimizer state missing (an adapter-only copy)"]
    return []


def verify_checkpoint_dir(path: Path) -> VerifyResult:
    """Re-hash every file the manifest lists; missing files and mismatches are problems."""
    try:
        manifest = read_manifest(path)
    except IntegrityError as exc:
        return VerifyResult(path=path, ok=False, problems=[exc.message])
    problems: list[str] = []
    for name, expected in sorted(manifest.files.items()):
        try:
            check_member_name(name)
        except IntegrityError:
            problems.append(f"{name!r}: unsafe file name in the manifest")
            continue
        member = path / name
        if not member.is_file() or member.is_symlink():
            problems.append(f"{name}: missing")
            continue
        try:
            size, sha256 = file_sha256(member)
        except OSError as exc:
            problems.append(f"{name}: cannot be read ({exc.strerror})")
            continue
        if size != expected.size:
            problems.append(f"{name}: size {size}, expected {expected.size}")
        elif sha256 != expected.sha256:
            problems.append(f"{name}: sha256 mismatch")
    return VerifyResult(
        path=path, ok=not problems, problems=problems, tinker_path=manifest.tinker_path
    )


def find_checkpoint_dirs(root: Path) -> list[Path]:
    """Every downloaded checkpoint directory at or below ``root`` (sorted), so both the
    ``download -o DIR`` layout (DIR/NAME) and the ``sync -o DIR`` one (DIR/RUN/KIND/NAME)
    are found. ``root`` itself may be a link the caller named; links below it are never
    followed (they could loop or lead elsewhere), and a checkpoint directory is not searched
    further. A missing or unreadable ``root`` holds none.
    """
    found: list[Path] = []
    # os.walk lists a link to a directory among the directories but does not enter it.
    for directory, subdirectories, files in os.walk(root):
        if MANIFEST_NAME in files:
            found.append(Path(directory))
            subdirectories.clear()
    return sorted(found)
