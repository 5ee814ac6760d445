"""diskio.read_private_file / write_private_file: a symlink or another user's file planted
where ours would be is never read as ours nor written through (tests run as root: the other
user is uid 65534)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from logits_cli.diskio import (
    ForeignPathError,
    fsync_directory,
    fsync_file,
    read_own_file,
    read_private_file,
    replace_file,
    write_private_file,
)

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


def test_replace_file_reuses_its_fixed_scratch_and_leaves_nothing(tmp_path: Path) -> None:
    """replace_file (one writer, a download's journal): a stale ``.NAME.tmp`` of ours, left by
    a killed write, is reused; the file is replaced with the mode asked; nothing is left."""
    path = tmp_path / "journal"
    (tmp_path / "journal.tmp").write_bytes(b"half a write")
    replace_file(path, b"new", 0o600, durable=True)
    assert path.read_bytes() == b"new" and path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal"]


def test_replace_file_refuses_a_planted_scratch_and_writes_nothing_through_it(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "journal.tmp").symlink_to(victim)
    with pytest.raises(ForeignPathError, match="symbolic link"):
        replace_file(tmp_path / "journal", b"new")
    assert victim.read_bytes() == b"keep" and not (tmp_path / "journal").exists()


def test_read_own_file_refuses_what_read_private_file_treats_as_absent(tmp_path: Path) -> None:
    """The same check, two answers: the download engine's files are refused loudly, the
    completion cache's are simply absent."""
    (tmp_path / "target").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    assert read_private_file(tmp_path / "link", 10) is None
    with pytest.raises(ForeignPathError):
        read_own_file(tmp_path / "link")
    assert read_own_file(tmp_path / "target") == b"x"


def test_fsync_file_does_not_follow_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "target").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    fsync_file(tmp_path / "target")
    fsync_directory(tmp_path)
    with pytest.raises(OSError):
        fsync_file(tmp_path / "link")
