"""Writing bytes to files in pieces the page cache takes cheaply (every layer writes through
these: the download engine, extraction, the store's archives, states and exports).

Why not one ``write`` of the whole buffer: on Linux 6.x the page cache gives each write(2) a
folio as large as the call (up to 2 MiB), and on this VM large folios are the expensive ones:
they come out of the free blocks the guest has handed back to its host, which the host must
supply again page by page. 272 MiB into a new file (``tests/bench/write_sizes.py``, dd and
ours, interleaved): in 2 MiB calls about 0.6 s, in 256 KiB calls 0.05 to 0.3 s depending on
what was freed before, in 16 KiB calls a steady 0.08 s. The download engine measured the same
(271 MiB per-file download: 0.81 s with 256 KiB pieces, 0.45 s with 16 KiB, interleaved);
8 KiB calls cost more in system calls, 32 KiB ones already take the slow path. 16 KiB is also
what curl writes per call. ``copy_file_range`` does not pay it, so kernel copies keep their
large steps.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

WRITE_PIECE = 16 * 1024  # at most this much per write(2); see the module's docstring


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """All of ``data`` at ``fd``'s position, at most ``WRITE_PIECE`` bytes per call."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        written = os.write(fd, view[done : done + WRITE_PIECE])
        if written == 0:
            raise OSError(errno.EIO, "the file accepted no bytes")
        done += written


def pwrite_all(fd: int, chunks: Sequence[bytes | bytearray | memoryview], offset: int) -> None:
    """``chunks`` back to back at ``offset``: few system calls, none over ``WRITE_PIECE``."""
    pending = [view for chunk in chunks if len(view := memoryview(chunk).cast("B"))]
    while pending:
        batch: list[memoryview] = []
        size = 0
        for chunk in pending:
            room = WRITE_PIECE - size
            if room <= 0:
                break
            batch.append(chunk[:room])
            size += len(batch[-1])
        written = os.pwritev(fd, batch, offset)
        if written == 0:
            raise OSError(errno.EIO, "the file accepted no bytes")
        offset += written
        while pending and written >= len(pending[0]):
            written -= len(pending.pop(0))
        if pending and written:
            pending[0] = pending[0][written:]


# Small private files of ours ($LOGITS_HOME/completion-cache.json, generations.json): the rule
# is that no file outside a directory we own is read as ours or replaced by us. Another user
# (a shared or sticky directory) can plant a symlink or a file of theirs where ours would be:
# a symlink is never followed, a file owned by anyone else is treated as absent, and a write
# goes to a fresh temporary name (O_EXCL | O_NOFOLLOW) renamed over the file, so neither a
# planted symlink nor a planted file is ever written through. The directory itself may be a
# symlink the user configured (LOGITS_HOME=~/data/logits), but must be owned by the user.

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def _open_own_directory(directory: Path) -> int | None:
    """A descriptor of ``directory`` if it is a directory owned by this user, else None."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if os.fstat(fd).st_uid != os.geteuid():
        os.close(fd)
        return None
    return fd


def read_private_file(path: Path, max_bytes: int) -> bytes | None:
    """The bytes of ``path`` if it is ours: a regular file (not a symlink) owned by this user,
    in a directory owned by this user, of at most ``max_bytes``. None when it is absent or
    not ours; other OSErrors are raised. ``read_own_file`` without the directory's check,
    refusing loudly instead of answering None."""
    directory_fd = _open_own_directory(path.parent)
    if directory_fd is None:
        return None
    try:
        fd = open_own_file(path.name, os.O_RDONLY | os.O_NONBLOCK, dir_fd=directory_fd)
    except (FileNotFoundError, ForeignPathError):
        return None
    finally:
        os.close(directory_fd)
    try:
        data = _read_up_to(fd, max_bytes + 1)
        return data if len(data) <= max_bytes else None
    finally:
        os.close(fd)


def write_private_file(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Replace ``path`` with ``data`` at once (readers see the old or the new bytes, never a
    part), mode 0600. The directory is created (0700) if missing and must be owned by this
    user; the bytes go to a fresh temporary file of a random name (several processes may
    write the same file at once: none renames another's half-written file) created with
    O_EXCL | O_NOFOLLOW and renamed over ``path``, so a symlink or a foreign file planted at
    ``path`` is replaced, never written through. ``durable`` also syncs the file and the
    directory. Raises OSError (PermissionError when the directory is not ours)."""
    path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    directory_fd = _open_own_directory(path.parent)
    if directory_fd is None:
        raise PermissionError(errno.EPERM, "not a directory owned by this user", str(path.parent))
    try:
        scratch = f".{path.name}.{os.urandom(8).hex()}.tmp"
        _write_and_rename(directory_fd, scratch, path.name, data, PRIVATE_FILE_MODE, durable)
    finally:
        os.close(directory_fd)


def _write_and_rename(
    directory_fd: int, scratch: str, name: str, data: bytes, mode: int, durable: bool
) -> None:
    """``data`` into the new file ``scratch`` (O_EXCL, never through a symlink), renamed
    over ``name``, both in the directory ``directory_fd``; ``scratch`` is removed when
    anything fails (a full disk leaves nothing behind). ``durable``: the file is synced
    before the rename and the directory after it."""
    fd = os.open(
        scratch,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        mode,
        dir_fd=directory_fd,
    )
    try:
        try:
            write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(scratch, name, src_dir_fd=directory_fd, dst_dir_fd=directory_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(scratch, dir_fd=directory_fd)
        raise
    if durable:
        os.fsync(directory_fd)


def fsync_directory(directory: Path | str) -> None:
    """Make the creations and renames inside ``directory`` durable."""
    _fsync_opened(directory, os.O_DIRECTORY)


def fsync_file(path: Path | str) -> None:
    """Make the bytes of the file at ``path`` durable (a symlink there is not followed)."""
    _fsync_opened(path, os.O_NOFOLLOW)


def _fsync_opened(path: Path | str, flags: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Working files of a download in DEST (``.NAME.part``, its journal and lock, ``.NAME.files/``,
# extraction directories, sync's lock): DEST may be shared (a sticky, world-writable directory
# like /tmp), where another user can plant a symlink or a directory of theirs at a name we are
# about to use. Our working paths are never followed (O_NOFOLLOW, rename instead of writing
# through) and are used only when they are ours: a regular file or a real directory owned by
# this user, a directory not writable by anyone else (else they could plant inside it). A path
# that is not ours is refused with ``ForeignPathError``, never removed or re-moded: it may
# be someone else's. DEST itself may be a symlink the user chose (``-o ~/ckpts``).


class ForeignPathError(PermissionError):
    """A working path that is not ours: a symlink, another user's, or open to other writers.
    ``strerror`` is one line that names the path and says what to do."""

    def __init__(self, path: Path | str, what: str) -> None:
        super().__init__(
            errno.EPERM, f"{path} is {what}; logits did not make it and will not use it: remove it"
        )


def check_ours(path: Path | str, status: os.stat_result, *, directory: bool) -> None:
    """Raise ``ForeignPathError`` unless ``status`` (of ``path``, not followed) is ours."""
    if stat.S_ISLNK(status.st_mode):
        raise ForeignPathError(path, "a symbolic link")
    if directory and not stat.S_ISDIR(status.st_mode):
        raise ForeignPathError(path, "not a directory")
    if not directory and not stat.S_ISREG(status.st_mode):
        raise ForeignPathError(path, "not a regular file")
    if status.st_uid != os.geteuid():
        raise ForeignPathError(path, f"owned by another user (uid {status.st_uid})")
    if directory and status.st_mode & 0o022:
        raise ForeignPathError(path, "writable by other users")


def open_own_file(
    path: Path | str, flags: int, mode: int = 0o644, *, dir_fd: int | None = None
) -> int:
    """``os.open`` that never follows a symlink at ``path`` and returns only a descriptor of a
    regular file owned by this user (``ForeignPathError`` otherwise)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ForeignPathError(path, "a symbolic link") from None
        # Some kernels refuse O_CREAT on another user's entry in a sticky directory with
        # EACCES: say what is there rather than "permission denied".
        try:
            status = os.lstat(path, dir_fd=dir_fd)
        except OSError:
            raise error from None
        check_ours(path, status, directory=False)
        raise
    try:
        check_ours(path, os.fstat(fd), directory=False)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_own_file(path: Path | str) -> None:
    """Refuse ``path`` when it exists and is not a regular file of ours; absent is fine."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return
    check_ours(path, status, directory=False)


def make_private_dir(path: Path | str, mode: int = PRIVATE_DIR_MODE) -> None:
    """Create the directory ``path`` (its parent must exist), or accept it when it is already
    ours (a directory owned by this user that no one else can write to, not a symlink). An
    existing directory's mode is never changed."""
    try:
        os.mkdir(path, mode)
        return
    except FileExistsError:
        pass
    check_ours(path, os.lstat(path), directory=True)


def open_own_dir(path: Path | str) -> int:
    """A descriptor of the directory ``path`` if it is ours (see ``make_private_dir``); a
    symlink at ``path`` is never followed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            check_ours(path, os.lstat(path), directory=True)  # raises, naming what it is
        raise
    try:
        check_ours(path, os.fstat(fd), directory=True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def replace_file(path: Path, data: bytes, mode: int = 0o644, *, durable: bool = False) -> None:
    """Replace ``path`` with ``data`` at once through ``.NAME.tmp`` beside it, for a file one
    writer owns (a download's journal, under its lock): the scratch name is fixed, so a
    killed write leaves nothing the next one does not reuse (a stale scratch of ours is
    removed first; a foreign one is refused). Written and renamed like
    ``write_private_file``'s: never through a symlink at either name."""
    scratch = path.name + ".tmp"
    directory_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            check_ours(
                path.parent / scratch, os.lstat(scratch, dir_fd=directory_fd), directory=False
            )
            os.unlink(scratch, dir_fd=directory_fd)
        except FileNotFoundError:
            pass
        _write_and_rename(directory_fd, scratch, path.name, data, mode, durable)
    finally:
        os.close(directory_fd)


def read_own_file(path: Path | str) -> bytes:
    """The bytes of ``path``, a regular file of ours (a symlink is not followed); refused
    with ``ForeignPathError`` otherwise."""
    fd = open_own_file(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return _read_up_to(fd, None)
    finally:
        os.close(fd)


def _read_up_to(fd: int, limit: int | None) -> bytes:
    """What ``fd`` holds from its position, stopping after ``limit`` bytes (None: all)."""
    chunks = []
    left = limit
    while left is None or left > 0:
        chunk = os.read(fd, 1 << 20 if left is None else min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        if left is not None:
            left -= len(chunk)
    return b"".join(chunks)


def try_lock_file(path: Path | str) -> int | None:
    """Take an exclusive ``flock`` on the lock file ``path`` (created if missing, 0644, never
    through a symlink, ours only) without waiting; the descriptor that holds it, or None
    when another process holds it. The same lock ``filelock.FileLock`` takes, so the two
    exclude each other. A lock taken on a file unlinked meanwhile (its holder removes it on
    release) is retried on the new file."""
    import fcntl  # Unix only, like the rest of the download engine's locking

    while True:
        fd = open_own_file(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        held = os.fstat(fd)
        try:
            now = os.lstat(path)
        except FileNotFoundError:
            now = None
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            return fd
        os.close(fd)  # we locked a file that is no longer at ``path``: lock the current one


def release_lock_file(path: Path | str, fd: int, *, remove: bool) -> None:
    """Release the lock ``try_lock_file`` returned; with ``remove`` the lock file goes first
    (while still held, and only if it is still the file we hold)."""
    try:
        if remove:
            held = os.fstat(fd)
            with contextlib.suppress(FileNotFoundError):
                now = os.lstat(path)
                if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                    os.unlink(path)
    finally:
        os.close(fd)  # closing the last descriptor drops the flock
