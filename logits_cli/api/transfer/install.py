"""The destination side: part paths, locks, free space, present copies, atomic installs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from logits_cli import models
from logits_cli.api.transfer.digests import hash_file
from logits_cli.api.transfer.journal import Journal
from logits_cli.api.verify import damaged_files, missing_content, read_manifest
from logits_cli.diskio import (
    ForeignPathError,
    check_own_file,
    make_private_dir,
    open_own_file,
    release_lock_file,
    try_lock_file,
)
from logits_cli.errors import (
    BusyError,
    IntegrityError,
    LogitsError,
)

# -- the whole download ---------------------------------------------------------------------


def part_paths(dest_dir: Path, name: str) -> tuple[Path, Path, Path]:
    part = dest_dir / f".{name}.part"
    return part, part.with_name(part.name + ".json"), part.with_name(part.name + ".lock")


def discard(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def install_file(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``, moving an existing ``target`` aside first: on ext4, a
    rename over an existing file flushes the renamed file to disk synchronously."""
    if not target.exists() and not target.is_symlink():
        os.rename(source, target)
        return
    aside = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.rename(target, aside)
    try:
        os.rename(source, target)
    except BaseException:
        os.rename(aside, target)
        raise
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink()


def local_copy(
    final: Path, checkpoint: models.Checkpoint, *, archive_only: bool, adapter_only: bool = False
) -> tuple[bool, list[str]]:
    """Whether ``final`` already holds our download of exactly this checkpoint (no network
    needed), and what is wrong with its files: missing or resized ones, found from the
    manifest's names and sizes without re-hashing, or the optimizer state an
    ``--adapter-only`` copy lacks when the whole checkpoint is asked for. Those are replaced."""
    if archive_only:
        if not final.is_file() or checkpoint.sha256 is None:
            return False, []
        if checkpoint.size_bytes is not None and final.stat().st_size != checkpoint.size_bytes:
            return False, []
        return hash_file(final, {"sha256"})["sha256"].hex() == checkpoint.sha256.lower(), []
    try:
        manifest = read_manifest(final)
    except (IntegrityError, OSError):  # OSError: DEST is no directory; reported later
        return False, []
    if checkpoint.sha256 is not None:
        same = manifest.archive_sha256 == checkpoint.sha256.lower()
    else:
        same = (
            manifest.tinker_path == checkpoint.tinker_path
            and manifest.archive_size == checkpoint.size_bytes
            and manifest.created == checkpoint.time
        )
    if not same:
        return False, []
    return True, damaged_files(final, manifest) + missing_content(
        manifest, adapter_only=adapter_only
    )


def sweep_leftovers(dest_dir: Path, name: str) -> None:
    """Remove what a killed process left mid-extraction or mid-replace. Only called while
    holding the part lock, so no live process is using them. The patterns are exact, so
    the files of a checkpoint whose name merely starts like these are never touched, and
    only what is ours goes: another user's file or directory at such a name is left alone."""
    escaped = re.escape(name)
    leftover_name = re.compile(
        rf"\.{escaped}\.(tmp-[a-z0-9_]{{8}}|old-[0-9a-f]{{8}}|tar\.old-[0-9]+)"
    )
    for leftover in dest_dir.iterdir():
        if not leftover_name.fullmatch(leftover.name):
            continue
        try:
            status = leftover.lstat()
        except FileNotFoundError:
            continue
        if status.st_uid != os.geteuid():
            continue
        if stat.S_ISDIR(status.st_mode):
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            discard(leftover)


def check_free_space(dest_dir: Path, part: Path, size: int | None, *, archive_only: bool) -> None:
    if size is None:
        return
    try:
        on_disk = part.stat().st_blocks * 512  # a resumed, sparse part file: only what is written
    except FileNotFoundError:
        on_disk = 0
    needed = max(0, size - on_disk) + (0 if archive_only else size)
    free = shutil.disk_usage(dest_dir).free
    if free < needed:
        raise LogitsError(
            f"not enough free space in {dest_dir}: {needed} bytes needed, {free} available"
        )


def prepare_destination(dest_dir: Path, lock_path: Path, *, private: bool = False) -> None:
    """Create ``dest_dir`` and prove it writable by creating the lock file, so an unwritable
    destination is reported as such, not as a lock that seems held (``-o /proc/self``).
    ``private``: ``dest_dir`` is a staging directory of ours (``-o FILE.tar``, ``-o -``),
    created 0700 and refused when it is not ours. The lock file is never a symlink
    followed (diskio.open_own_file)."""
    hint = "choose a directory you can write to with -o DIR"
    try:
        if private:
            dest_dir.parent.mkdir(parents=True, exist_ok=True)
            make_private_dir(dest_dir)
        else:
            dest_dir.mkdir(parents=True, exist_ok=True)
    except ForeignPathError:
        raise
    except OSError as exc:
        raise LogitsError(f"cannot create {dest_dir}: {exc.strerror or exc}", hint=hint) from None
    try:
        os.close(open_own_file(lock_path, os.O_WRONLY | os.O_CREAT, 0o644))
    except ForeignPathError:
        raise
    except OSError as exc:
        raise LogitsError(
            f"cannot create files in {dest_dir}: {exc.strerror or exc}", hint=hint
        ) from None


@dataclass(frozen=True)
class PartLock:
    """The held lock of one part: the lock file and the descriptor holding its flock."""

    path: Path
    fd: int


async def lock_part(lock_path: Path, wait: float) -> PartLock:
    """Hold the part file's lock, polling for up to ``wait`` seconds (non-blocking attempts
    keep Ctrl-C and cancellation immediate)."""
    give_up = time.monotonic() + wait
    while True:
        fd = try_lock_file(lock_path)
        if fd is not None:
            return PartLock(lock_path, fd)
        remaining = give_up - time.monotonic()
        if remaining <= 0:
            raise BusyError(
                f"another process is downloading into {lock_path.parent} "
                f"(lock {lock_path.name} is held)",
                option="lock_wait",
            )
        await asyncio.sleep(min(0.2, remaining))


def check_working_files(*paths: Path) -> None:
    """Each of ``paths`` is absent or a regular file of ours: a symlink or another user's
    file planted at a part or journal name is refused before anything opens it."""
    for path in paths:
        check_own_file(path)


def discard_unresumable(part: Path, journal_path: Path, *, invalid: bool) -> None:
    """After a failure keep only what a later run can resume: a part file with a journal
    that counts some good bytes. Invalid content (an integrity failure) goes too."""
    journal = None if invalid else Journal.load(journal_path)
    if journal is None or journal.done_bytes == 0 or not part.is_file() or part.is_symlink():
        discard(part, journal_path, journal_path.with_name(journal_path.name + ".tmp"))


def unlock_part(lock: PartLock) -> None:
    # The lock file goes while still held; a process waiting on the old file notices it was
    # unlinked and locks the new one (diskio.try_lock_file).
    release_lock_file(lock.path, lock.fd, remove=True)
