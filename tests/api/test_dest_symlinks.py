"""Working files in DEST are never followed (issue 21 G6, G13): a symlink, a foreign file or
another user's directory planted at a name the download engine is about to use is refused
with one line, and whatever it points at is left exactly as it was (contents and mode).

Downloads of a real checkpoint from the real server over 127.0.0.1. The two-user cases plant
as ``nobody`` (uid 65534, a child process started with ``user=``) in a sticky, world-writable
directory like /tmp, and download as root, as the attack in the issue did.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from transfer_support import listing, make_checkpoint, ref_of, remote_client

from logits_cli import diskio
from logits_cli.api import DownloadOptions
from logits_cli.api.sync import LOCK_NAME, run_sync
from logits_cli.api.sync_items import SyncOptions
from logits_cli.api.verify import verify_checkpoint_dir
from logits_cli.errors import ConflictError, LogitsError

NOBODY = 65534
ONE_LINE = "logits did not make it and will not use it: remove it"


def snapshot(directory: Path) -> dict[str, Any]:
    """Everything a victim directory holds, and its mode: what must not change."""
    return {
        "mode": stat.S_IMODE(directory.stat().st_mode),
        "entries": {
            p.name: (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
            for p in sorted(directory.iterdir())
        },
    }


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A private directory of root's with one file: where a planted symlink points."""
    directory = tmp_path / "victim"
    directory.mkdir(mode=0o700)
    directory.chmod(0o700)
    (directory / "secret").write_bytes(b"root's own bytes")
    return directory


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A sticky, world-writable directory (like /tmp) both users can reach."""
    directory = Path(tempfile.mkdtemp(prefix="logits-shared-", dir="/tmp"))
    directory.chmod(0o1777)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def as_nobody(script: str) -> None:
    """Run the shell ``script`` as uid/gid 65534 (no Python: ours lives under /root); bounded."""
    if os.geteuid() != 0:
        pytest.skip("planting as another user needs root")
    subprocess.run(
        ["/bin/sh", "-ec", script], user=NOBODY, group=NOBODY, check=True, timeout=30, cwd="/"
    )


def download(server: Any, home: Path, dest: Path, **options: Any) -> Any:
    """Make a checkpoint and download it into ``dest``: the result, or the LogitsError."""

    async def scenario() -> Any:
        async with remote_client(server, home) as client:
            checkpoint = await make_checkpoint(client)
            try:
                return await client.download(
                    ref_of(checkpoint), dest, options=DownloadOptions(**options)
                )
            except LogitsError as refused:
                return refused

    return asyncio.run(scenario())


@pytest.mark.parametrize("planted", [".ckpt.part", ".ckpt.part.json", ".ckpt.part.json.tmp"])
def test_a_symlinked_part_or_journal_is_refused_and_its_target_untouched(
    planted: str, module_server: Any, tmp_path: Path, victim: Path
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / planted).symlink_to(victim / "secret")
    before = snapshot(victim)
    outcome = download(module_server, tmp_path / "home", dest)
    assert isinstance(outcome, LogitsError) and outcome.exit_code == 1
    assert f"{dest / planted} is a symbolic link" in outcome.message
    assert ONE_LINE in outcome.message and "\n" not in outcome.message
    assert snapshot(victim) == before
    assert listing(dest) == [planted]  # the planted link is not ours to remove


def test_a_dangling_lock_symlink_creates_nothing_at_its_target(
    module_server: Any, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    target = tmp_path / "created-by-the-lock"
    (dest / ".ckpt.part.lock").symlink_to(target)
    outcome = download(module_server, tmp_path / "home", dest)
    assert isinstance(outcome, LogitsError) and "is a symbolic link" in outcome.message
    assert not target.exists() and not target.is_symlink()


def test_a_lock_planted_by_another_user_in_a_sticky_directory_is_refused(
    module_server: Any, tmp_path: Path, shared_dir: Path
) -> None:
    target = shared_dir / "created-by-the-lock"
    as_nobody(f"cd {shared_dir}; ln -s {target} .ckpt.part.lock; touch .ckpt.part")
    outcome = download(module_server, tmp_path / "home", shared_dir)
    assert isinstance(outcome, LogitsError) and "is a symbolic link" in outcome.message
    assert not target.exists()
    os.unlink(shared_dir / ".ckpt.part.lock")  # the user removes it, as the message says
    outcome = download(module_server, tmp_path / "home", shared_dir)
    assert isinstance(outcome, LogitsError)
    assert f"{shared_dir / '.ckpt.part'} is owned by another user (uid {NOBODY})" in (
        outcome.message
    )
    assert (shared_dir / ".ckpt.part").stat().st_size == 0  # nobody's file: never written


def test_a_symlink_at_the_final_name_is_replaced_never_written_through(
    module_server: Any, tmp_path: Path, victim: Path
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "ckpt").symlink_to(victim, target_is_directory=True)
    before = snapshot(victim)
    refused = download(module_server, tmp_path / "home", dest)
    assert isinstance(refused, ConflictError) and snapshot(victim) == before
    result = download(module_server, tmp_path / "home", dest, force=True)
    assert not isinstance(result, LogitsError), result
    assert not (dest / "ckpt").is_symlink() and verify_checkpoint_dir(dest / "ckpt").ok
    assert snapshot(victim) == before
    assert listing(dest) == ["ckpt"]


def test_an_archive_file_staging_directory_must_be_ours(
    module_server: Any, tmp_path: Path, victim: Path
) -> None:
    """``--archive-only -o FILE.tar`` stages in ``.FILE.tar.logits/`` (private_dest)."""
    staging = tmp_path / ".last.tar.logits"
    staging.symlink_to(victim, target_is_directory=True)
    before = snapshot(victim)
    outcome = download(
        module_server, tmp_path / "home", staging, archive_only=True, private_dest=True
    )
    assert isinstance(outcome, LogitsError) and "is a symbolic link" in outcome.message
    assert snapshot(victim) == before
    staging.unlink()
    result = download(
        module_server, tmp_path / "home", staging, archive_only=True, private_dest=True
    )
    assert not isinstance(result, LogitsError), result
    assert stat.S_IMODE(staging.stat().st_mode) == 0o700
    assert listing(staging) == ["ckpt.tar"]


def test_a_full_disk_while_the_journal_is_written_leaves_nothing(
    module_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """G13 where no tmpfs can be mounted: the journal's write fails with ENOSPC (after the
    checkpoint is saved: the server in this process writes through diskio too)."""

    def no_space(fd: int, data: Any) -> None:
        os.write(fd, bytes(memoryview(data)[:1]))  # the file exists and holds a little
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    dest = tmp_path / "dest"

    async def scenario() -> Any:
        async with remote_client(module_server, tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client)
            monkeypatch.setattr(diskio, "write_all", no_space)  # what replace_file writes with
            try:
                return await client.download(
                    ref_of(checkpoint), dest, options=DownloadOptions(connections=1)
                )
            except LogitsError as refused:
                return refused
            finally:
                monkeypatch.undo()

    outcome = asyncio.run(scenario())
    assert isinstance(outcome, LogitsError), outcome
    assert "No space left on device" in outcome.message
    assert listing(dest) == []


def test_a_symlinked_sync_lock_is_refused(module_server: Any, tmp_path: Path, victim: Path) -> None:
    dest = tmp_path / "sync"
    dest.mkdir()
    (dest / LOCK_NAME).symlink_to(victim / "secret")
    before = snapshot(victim)

    async def scenario() -> None:
        async with remote_client(module_server, tmp_path / "home") as client:
            with pytest.raises(LogitsError, match="is a symbolic link"):
                await run_sync(client, dest, SyncOptions())

    asyncio.run(scenario())
    assert snapshot(victim) == before


def test_make_private_dir_never_changes_a_directory_it_did_not_make(
    tmp_path: Path, victim: Path
) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    for path, what in (
        (tmp_path / "link", "a symbolic link"),
        (open_dir, "writable by other users"),
        (victim / "secret", "not a directory"),
    ):
        if what == "a symbolic link":
            path.symlink_to(victim, target_is_directory=True)
        with pytest.raises(diskio.ForeignPathError, match=what):
            diskio.make_private_dir(path)
    assert stat.S_IMODE(open_dir.stat().st_mode) == 0o777
    assert stat.S_IMODE(victim.stat().st_mode) == 0o700
    mine = tmp_path / "mine"
    diskio.make_private_dir(mine)
    diskio.make_private_dir(mine)  # ours: accepted again, mode kept
    assert stat.S_IMODE(mine.stat().st_mode) == 0o700


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (we are root in CI): a real full disk, not a simulated one."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)],
        capture_output=True,
        timeout=30,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], timeout=30, check=False)


def fill(directory: Path) -> Path:
    """Take every free byte of ``directory``'s filesystem; returns the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = bytes(1 << 16)
        while True:
            try:
                os.write(fd, block)
            except OSError as full:
                if full.errno != errno.ENOSPC:
                    raise
                if len(block) == 1:
                    break
                block = block[: len(block) // 16 or 1]
    finally:
        os.close(fd)
    return filler


def test_a_disk_that_fills_during_the_fetch_leaves_no_temporary_file(
    module_server: Any, tmp_path: Path, small_disk: Path
) -> None:
    """G13: ENOSPC in the middle of an archive fetch left ``.NAME.part.json.tmp``. The disk
    fills (another writer) once the first bytes arrived, after the free-space check."""
    dest = small_disk / "dest"
    filled: list[Path] = []

    def fill_once(done: int, total: int | None) -> None:
        if done and not filled:
            filled.append(fill(small_disk))

    async def scenario() -> tuple[Any, Any]:
        async with remote_client(module_server, tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client, rank=256)
            options = DownloadOptions(connections=1, segment_size=256 * 1024)
            try:
                first: Any = await client.download(
                    ref_of(checkpoint), dest, options=options, progress=fill_once
                )
            except LogitsError as refused:
                first = refused
            filled[0].unlink()  # the other writer is done: the same download now finishes
            second = await client.download(ref_of(checkpoint), dest, options=options)
            return first, second

    first, second = asyncio.run(scenario())
    assert isinstance(first, LogitsError), first
    assert "No space left on device" in first.message
    assert second.path == dest / "ckpt" and verify_checkpoint_dir(second.path).ok
    assert listing(dest) == ["ckpt"]


def test_a_full_disk_leaves_only_what_resumes(
    module_server: Any, tmp_path: Path, small_disk: Path
) -> None:
    """What a full disk leaves behind is a part with its journal, never a temporary file."""
    dest = small_disk / "dest"
    filled: list[Path] = []

    def fill_later(done: int, total: int | None) -> None:
        if done >= 512 * 1024 and not filled:
            filled.append(fill(small_disk))

    async def scenario() -> Any:
        async with remote_client(module_server, tmp_path / "home") as client:
            checkpoint = await make_checkpoint(client, rank=256)
            options = DownloadOptions(connections=1, segment_size=256 * 1024)
            try:
                return await client.download(
                    ref_of(checkpoint), dest, options=options, progress=fill_later
                )
            except LogitsError as refused:
                return refused

    outcome = asyncio.run(scenario())
    assert isinstance(outcome, LogitsError), outcome
    assert set(listing(dest)) <= {".ckpt.part", ".ckpt.part.json"}, listing(dest)


def test_the_cli_stages_an_archive_file_only_in_a_directory_of_its_own(
    module_server: Any, tmp_path: Path, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``logits ckpt download P --archive-only -o FILE.tar`` with ``.FILE.tar.logits``
    planted as a symlink: one line, exit 1, the victim unchanged; then it works."""
    from tests.cli.conftest import invoke

    async def make() -> str:
        async with remote_client(module_server, tmp_path / "home") as client:
            return (await make_checkpoint(client)).tinker_path

    path = asyncio.run(make())
    monkeypatch.setenv("LOGITS_BASE_URL", module_server.base_url)
    monkeypatch.setenv("LOGITS_API_KEY", module_server.api_key("alice"))
    out = tmp_path / "out"
    out.mkdir()
    (out / ".last.tar.logits").symlink_to(victim, target_is_directory=True)
    before = snapshot(victim)
    args = ["ckpt", "download", path, "--archive-only", "-o", str(out / "last.tar")]
    refused = invoke(args)
    assert refused.exit_code == 1, refused.stderr
    assert f"{out / '.last.tar.logits'} is a symbolic link" in refused.stderr.splitlines()[-1]
    assert snapshot(victim) == before
    (out / ".last.tar.logits").unlink()
    done = invoke(args)
    assert done.exit_code == 0, done.stderr
    assert listing(out) == ["last.tar"]


def test_another_users_leftover_lookalikes_are_never_deleted(
    module_server: Any, tmp_path: Path, shared_dir: Path
) -> None:
    """The sweep of a killed extraction's leftovers (``.NAME.tmp-XXXXXXXX``, ``.NAME.old-…``)
    removes only what is ours: a directory of that name made by another user stays."""
    as_nobody(
        f"cd {shared_dir}; mkdir .ckpt.tmp-abcd1234; echo theirs > .ckpt.tmp-abcd1234/file;"
        " echo theirs > .ckpt.old-0123abcd"
    )
    result = download(module_server, tmp_path / "home", shared_dir)
    assert not isinstance(result, LogitsError), result
    assert verify_checkpoint_dir(shared_dir / "ckpt").ok
    assert (shared_dir / ".ckpt.tmp-abcd1234" / "file").read_text() == "theirs\n"
    assert (shared_dir / ".ckpt.old-0123abcd").read_text() == "theirs\n"
