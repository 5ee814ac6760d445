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

import errno
import os
from collections.abc import Sequence

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
