"""diskio.read_private_file / write_private_file: a symlink or another user's file planted
where ours would be is never read as ours nor written through (tests run as root: the other
user is uid 65534)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from logits_cli.diskio import read_private_file, write_private_file

OTHER_UID = 65534


def test_our_file_round_trips_with_private_mode(tmp_path: Path) -> None:
    path = tmp_path / "new-dir" / "state.json"
    write_private_file(path, b"{}")
    write_private_file(path, b'{"a": 1}', durable=True)
    assert read_private_file(path, 100) == b'{"a": 1}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["state.json"], "no temporary file left"


def test_absent_and_oversized_files_read_as_none(tmp_path: Path) -> None:
    assert read_private_file(tmp_path / "missing", 10) is None
    assert read_private_file(tmp_path / "no-dir" / "missing", 10) is None
    (tmp_path / "big").write_bytes(b"x" * 11)
    assert read_private_file(tmp_path / "big", 10) is None
    assert read_private_file(tmp_path / "big", 11) == b"x" * 11


def test_a_planted_symlink_is_neither_read_nor_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"secret")
    path = tmp_path / "cache.json"
    path.symlink_to(victim)
    assert read_private_file(path, 100) is None
    write_private_file(path, b"ours")
    assert victim.read_bytes() == b"secret"
    assert not path.is_symlink() and path.read_bytes() == b"ours"


def test_another_users_file_is_absent_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    path.write_bytes(b"planted")
    os.chown(path, OTHER_UID, OTHER_UID)
    assert read_private_file(path, 100) is None
    write_private_file(path, b"ours")
    assert path.stat().st_uid == os.geteuid() and read_private_file(path, 100) == b"ours"


def test_a_directory_of_another_user_is_not_ours(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "cache.json").write_bytes(b"planted")
    os.chown(shared, OTHER_UID, OTHER_UID)
    assert read_private_file(shared / "cache.json", 100) is None
    with pytest.raises(PermissionError):
        write_private_file(shared / "cache.json", b"ours")
    assert (shared / "cache.json").read_bytes() == b"planted"


def test_a_fifo_or_a_directory_is_not_a_file_of_ours(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    assert read_private_file(tmp_path / "fifo", 100) is None  # and does not block
    assert read_private_file(tmp_path / "dir", 100) is None
