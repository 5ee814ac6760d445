"""How far a response body may go (issue 21, F6; docs/protocol.md §6.3 step 2).

A body is never written past the size promised for it (the listing, ``Content-Length``,
``Content-Range``). When no source gives a size (a 200 without ``Content-Length`` for a
checkpoint listed without one) the body is bounded twice: by a cap
(``DownloadOptions.max_unsized_bytes``, ``LOGITS_MAX_UNSIZED_DOWNLOAD``, 64 GiB by default),
and by the free space of DEST, which it never takes below a reserve. Such a body cannot be
resumed (its end is unknown), so a download stopped either way leaves nothing behind.

A size that only the answer's headers give is checked against the free space when it
arrives, as ``install.check_free_space`` does for a listed size.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from logits_cli.config import MAX_UNSIZED_DOWNLOAD_VARIABLE
from logits_cli.errors import IntegrityError, LogitsError

MiB = 1 << 20
GiB = 1 << 30
# What a body of unknown size leaves free: 1 GiB, or 5 % of a smaller filesystem, but at
# least 8 MiB (more than the bytes received and not yet written: two write batches, and
# the SPACE_CHECK_EVERY bytes between two checks).
FREE_SPACE_RESERVE = GiB
FREE_SPACE_RESERVE_SHARE = 20
MIN_FREE_SPACE_RESERVE = 8 * MiB
SPACE_CHECK_EVERY = MiB  # one statvfs per MiB: nothing next to writing the MiB


class BodyOverflow(Exception):
    """A body went past ``limit``, the end it was allowed; not one byte past it is written."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


def size_text(count: int) -> str:
    """``64 GiB``, ``500 MiB``; exact, so a limit reads as it was set."""
    for name, unit in (("TiB", 1 << 40), ("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if count >= unit and count % unit == 0:
            return f"{count // unit} {name}"
    return f"{count} bytes"


def free_space_reserve(filesystem_size: int) -> int:
    share = filesystem_size // FREE_SPACE_RESERVE_SHARE
    return max(MIN_FREE_SPACE_RESERVE, min(FREE_SPACE_RESERVE, share))


class UnsizedBody:
    """The bounds of one body of unknown size, written into ``directory``."""

    def __init__(self, directory: Path, cap: int) -> None:
        self.directory = directory
        self.cap = cap
        self._next_check = 0

    def check_room(self, end: int) -> None:
        """Before the body grows to ``end`` bytes: refuse once DEST's free space is down to
        the reserve. Called for every read (in the thread that reads); checks every MiB."""
        if end < self._next_check:
            return
        self._next_check = end + SPACE_CHECK_EVERY
        usage = shutil.disk_usage(self.directory)
        reserve = free_space_reserve(usage.total)
        if usage.free < reserve:
            raise LogitsError(
                f"stopped a download of unknown size after {end} bytes: less than "
                f"{size_text(reserve)} would be left free in {self.directory}"
            )

    def overflow(self) -> LogitsError:
        return LogitsError(
            f"the server sent more than {size_text(self.cap)} without saying how large the "
            f"file is; refused ({MAX_UNSIZED_DOWNLOAD_VARIABLE}=SIZE allows more)"
        )


def overflow_error(overflow: BodyOverflow, unsized: UnsizedBody | None) -> LogitsError:
    """What a body past its limit means: more than a size someone promised (integrity), or
    more than the cap of a body nobody gave a size for."""
    if unsized is not None and overflow.limit == unsized.cap:
        return unsized.overflow()
    return IntegrityError(f"the server sent more than the {overflow.limit} bytes promised")


def check_room_for(fd: int, directory: Path, size: int) -> None:
    """A size only the answer gives: refused now if DEST cannot hold what is still missing
    of it (the part file is sparse: only its written blocks count as there)."""
    needed = max(0, size - os.fstat(fd).st_blocks * 512)
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise LogitsError(
            f"not enough free space in {directory}: {needed} bytes needed, {free} available"
        )
