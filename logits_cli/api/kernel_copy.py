"""Copy a byte range of one file into a new file in the kernel while hashing it beside.

Extraction of an uncompressed archive (docs/ARCHITECTURE.md §3) does not push member bytes
through Python: ``os.copy_file_range`` moves them page cache to page cache, and a second
thread reads the same range into one reused buffer for sha256 (hashlib releases the GIL),
so the copy and the hash run on both cores at once. tests/bench/download.py measures it
against ``curl -o`` + ``tar -x``; streaming ``tarfile`` reads took three times as long.
"""

from __future__ import annotations

import errno
import hashlib
import os
from concurrent.futures import Executor

from logits_cli import models
from logits_cli.diskio import write_all
from logits_cli.errors import IntegrityError

_HASH_BUFFER = 8 * 1024 * 1024
_COPY_STEP = 1 << 30
# copy_file_range is refused across some filesystems and by some (overlay, FUSE, old
# kernels): then the bytes go through one reused buffer instead.
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF}


def copy_range_hashed(
    pool: Executor, source_fd: int, offset: int, size: int, target: str
) -> models.FileDigest:
    """Create ``target`` (never through an existing name), fill it with ``size`` bytes of
    ``source_fd`` from ``offset``, fsync it; returns the digest of what was copied.

    A source shorter than ``offset + size`` is an IntegrityError (a truncated archive)."""
    hashed = pool.submit(_hash_range, source_fd, offset, size)
    try:
        _copy_range(source_fd, offset, size, target)
    finally:
        digest = hashed.result()  # never leave a reader behind, even on failure
    return models.FileDigest(sha256=digest, size=size)


def _hash_range(source_fd: int, offset: int, size: int) -> str:
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(min(_HASH_BUFFER, max(size, 1))))
    done = 0
    while done < size:
        got = os.preadv(source_fd, [buffer[: min(len(buffer), size - done)]], offset + done)
        if got == 0:
            raise IntegrityError("the archive ends inside a member: truncated")
        digest.update(buffer[:got])
        done += got
    return digest.hexdigest()


def _copy_range(source_fd: int, offset: int, size: int, target: str) -> None:
    # O_EXCL | O_NOFOLLOW: never write through something already at that name.
    out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        done = 0
        kernel = True
        while done < size:
            if kernel:
                try:
                    got = os.copy_file_range(
                        source_fd, out, min(size - done, _COPY_STEP), offset + done
                    )
                except OSError as exc:
                    if exc.errno not in _NO_KERNEL_COPY or done:
                        raise
                    kernel = False
                    continue
            else:
                chunk = os.pread(source_fd, min(_HASH_BUFFER, size - done), offset + done)
                write_all(out, chunk)
                got = len(chunk)
            if got == 0:
                raise IntegrityError("the archive ends inside a member: truncated")
            done += got
        os.fsync(out)
    finally:
        os.close(out)
