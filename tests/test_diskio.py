"""diskio: every byte lands where it belongs, and no write(2) is larger than WRITE_PIECE."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logits_cli import diskio
from logits_cli.diskio import WRITE_PIECE, pwrite_all, write_all

# Chunk sizes around the piece size: empty, tiny, just under, at and over it.
chunk_sizes = st.lists(
    st.sampled_from([0, 1, 7, WRITE_PIECE - 1, WRITE_PIECE, WRITE_PIECE + 3, 3 * WRITE_PIECE]),
    max_size=6,
)


@settings(max_examples=40, deadline=None)
@given(sizes=chunk_sizes, offset=st.sampled_from([0, 5, WRITE_PIECE + 1]))
def test_pwrite_all_writes_every_chunk_back_to_back(tmp_path_factory, sizes, offset) -> None:
    path = tmp_path_factory.mktemp("pwrite") / "file"
    chunks = [os.urandom(size) for size in sizes]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        pwrite_all(fd, [memoryview(c) if i % 2 else c for i, c in enumerate(chunks)], offset)
    finally:
        os.close(fd)
    data = path.read_bytes()
    expected = b"".join(chunks)
    assert data[offset:] == expected
    assert len(data) == (offset + len(expected) if expected else 0)


def test_no_call_exceeds_the_piece(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    real_write, real_pwritev = os.write, os.pwritev

    def write(fd: int, data: memoryview) -> int:
        sizes.append(len(data))
        return real_write(fd, data)

    def pwritev(fd: int, buffers: list[memoryview], offset: int) -> int:
        sizes.append(sum(len(b) for b in buffers))
        return real_pwritev(fd, buffers, offset)

    monkeypatch.setattr(diskio.os, "write", write)
    monkeypatch.setattr(diskio.os, "pwritev", pwritev)
    big = os.urandom(5 * WRITE_PIECE + 123)
    with open(tmp_path / "a", "wb", buffering=0) as out:
        write_all(out.fileno(), big)
    fd = os.open(tmp_path / "b", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        pwrite_all(fd, [big[:100], big[100:]], 0)
    finally:
        os.close(fd)
    assert (tmp_path / "a").read_bytes() == big == (tmp_path / "b").read_bytes()
    assert max(sizes) == WRITE_PIECE
    assert len(sizes) == 2 * 6


def test_a_file_that_takes_no_bytes_is_an_error(tmp_path: Path) -> None:
    # /dev/full refuses every write with ENOSPC: the error reaches the caller.
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(OSError):
            write_all(fd, b"x" * 10)
    finally:
        os.close(fd)
