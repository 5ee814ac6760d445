"""Writing bytes to files in pieces the page cache takes cheaply (every layer writes through
these: the download engine, extraction, the store's archives, states and exports).

Why not one ``write`` of the whole buffer: on Linux 6.x with large folios (ext4 and xfs), one
``write(2)`` of 1 MiB or more into new pages costs the kernel about ten times what the same
bytes cost in calls of 512 KiB or less (this machine: 272 MiB in 2 MiB calls, 0.62 s of
system time; in 256 KiB calls, 0.05 s). ``tests/bench/write_sizes.py`` measures it beside
``dd`` with both block sizes. ``copy_file_range`` does not pay it, so kernel copies keep
their large steps.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence

WRITE_PIECE = 256 * 1024  # at most this much per write(2); see the module's docstring


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
