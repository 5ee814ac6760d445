"""Safe extraction (logits_cli/api/extract.py, docs/protocol.md §7.5): hostile archives leave nothing."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest
from transfer_support import (
    GOOD_FILES,
    TINKER_PATH,
    build_tar,
    checkpoint_for,
    complete_document,
    good_archive,
    listing,
)

from logits_cli import models
from logits_cli.api.extract import extract_checkpoint
from logits_cli.api.verify import MANIFEST_NAME, verify_checkpoint_dir
from logits_cli.errors import ConflictError, IntegrityError


def extract(
    tmp_path: Path, archive: bytes, *, force: bool = False, tinker_path: str = TINKER_PATH
) -> Path:
    source = tmp_path / "archive.tar"
    source.write_bytes(archive)
    dest = tmp_path / "dest"
    dest.mkdir(exist_ok=True)
    return extract_checkpoint(
        source,
        dest,
        "step-1",
        checkpoint=checkpoint_for(archive, tinker_path),
        archive_sha256=hashlib.sha256(archive).hexdigest(),
        archive_size=len(archive),
        force=force,
    )


@pytest.mark.parametrize("gzip", [False, True])
def test_extracts_files_and_writes_a_manifest(tmp_path: Path, gzip: bool) -> None:
    archive = good_archive(gzip=gzip)
    final = extract(tmp_path, archive)
    assert final == tmp_path / "dest" / "step-1"
    assert listing(tmp_path / "dest") == ["step-1"]
    assert listing(final) == sorted([*GOOD_FILES, "checkpoint_complete", MANIFEST_NAME])
    for name, data in GOOD_FILES.items():
        assert (final / name).read_bytes() == data
    manifest = models.LocalManifest.model_validate_json((final / MANIFEST_NAME).read_bytes())
    assert manifest.tinker_path == TINKER_PATH
    assert manifest.archive_sha256 == hashlib.sha256(archive).hexdigest()
    assert manifest.archive_size == len(archive)
    assert manifest.files["adapter_model.safetensors"].size == 5000
    assert verify_checkpoint_dir(final).ok


def test_extra_members_listed_in_checkpoint_complete_are_kept(tmp_path: Path) -> None:
    files = {**GOOD_FILES, "README.md": b"hello\n"}
    members = [*files.items(), ("checkpoint_complete", complete_document(files))]
    final = extract(tmp_path, build_tar(members))
    assert (final / "README.md").read_bytes() == b"hello\n"


def test_a_member_not_named_by_checkpoint_complete_is_refused(tmp_path: Path) -> None:
    # Issue 8 F7: checkpoint_complete lists every other member (docs/protocol.md §7.4).
    members = [*GOOD_FILES.items(), ("README.md", b"hello\n")]
    members.append(("checkpoint_complete", complete_document(GOOD_FILES)))
    with pytest.raises(IntegrityError) as caught:
        extract(tmp_path, build_tar(members))
    assert caught.value.message == "archive member 'README.md' is not listed in checkpoint_complete"
    assert listing(tmp_path / "dest") == []


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


HOSTILE = {
    "absolute path": [("/etc/evil", b"x")],
    "parent directory": [("../evil", b"x")],
    "dot-dot inside": [("a..b", b"x")],
    "nested path": [("sub/evil", b"x")],
    "backslash": [("a\\evil", b"x")],
    "symlink": [special("adapter_model.safetensors", tarfile.SYMTYPE, "/etc/passwd")],
    "hardlink": [special("evil", tarfile.LNKTYPE, "adapter_config.json")],
    "character device": [special("evil", tarfile.CHRTYPE)],
    "fifo": [special("evil", tarfile.FIFOTYPE)],
    "directory": [special("sub", tarfile.DIRTYPE)],
    "duplicate": [("adapter_config.json", b"second copy")],
    "manifest name": [(MANIFEST_NAME, b"{}")],
    "overlong name": [("x" * 256, b"x")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_members_are_refused_and_nothing_is_left(tmp_path: Path, case: str) -> None:
    members = [*GOOD_FILES.items(), *HOSTILE[case]]
    members.append(("checkpoint_complete", complete_document(GOOD_FILES)))
    with pytest.raises(IntegrityError):
        extract(tmp_path, build_tar(members))
    assert listing(tmp_path / "dest") == []
    assert not (tmp_path / "etc").exists()
    assert not (tmp_path / "evil").exists()


def test_missing_checkpoint_complete_is_incomplete(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="incomplete"):
        extract(tmp_path, build_tar(list(GOOD_FILES.items())))
    assert listing(tmp_path / "dest") == []


def test_lying_checkpoint_complete_is_refused(tmp_path: Path) -> None:
    lie = dict(GOOD_FILES, **{"adapter_model.safetensors": b"B" * 5000})
    members = [*GOOD_FILES.items(), ("checkpoint_complete", complete_document(lie))]
    with pytest.raises(IntegrityError, match=r"adapter_model\.safetensors: sha256"):
        extract(tmp_path, build_tar(members))
    assert listing(tmp_path / "dest") == []


def test_checkpoint_complete_listing_a_missing_file_is_refused(tmp_path: Path) -> None:
    listed = dict(GOOD_FILES, **{"optimizer_state.safetensors": b"O" * 10})
    members = [*GOOD_FILES.items(), ("checkpoint_complete", complete_document(listed))]
    with pytest.raises(IntegrityError, match=r"optimizer_state\.safetensors: listed"):
        extract(tmp_path, build_tar(members))
    assert listing(tmp_path / "dest") == []


def test_unreadable_checkpoint_complete_is_refused(tmp_path: Path) -> None:
    members = [*GOOD_FILES.items(), ("checkpoint_complete", b"not json")]
    with pytest.raises(IntegrityError, match="unreadable"):
        extract(tmp_path, build_tar(members))


def test_archive_of_another_checkpoint_is_refused(tmp_path: Path) -> None:
    other = "logits://run-2:train:0/weights/step-1"
    members = [*GOOD_FILES.items(), ("checkpoint_complete", complete_document(GOOD_FILES, other))]
    with pytest.raises(IntegrityError, match="holds"):
        extract(tmp_path, build_tar(members))


def test_other_scheme_in_checkpoint_complete_is_the_same_checkpoint(tmp_path: Path) -> None:
    tinker = TINKER_PATH.replace("logits://", "tinker://")
    members = [*GOOD_FILES.items(), ("checkpoint_complete", complete_document(GOOD_FILES, tinker))]
    assert extract(tmp_path, build_tar(members)).is_dir()


def test_garbage_is_not_a_tar(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="not a readable tar"):
        extract(tmp_path, b"\x1f\x8b" + b"garbage" * 100)
    assert listing(tmp_path / "dest") == []


def test_existing_directory_needs_force_and_is_replaced_whole(tmp_path: Path) -> None:
    final = extract(tmp_path, good_archive())
    (final / "stale").write_text("old")
    with pytest.raises(ConflictError):
        extract(tmp_path, good_archive())
    assert (final / "stale").exists()
    extract(tmp_path, good_archive(), force=True)
    assert not (final / "stale").exists()
    assert listing(tmp_path / "dest") == ["step-1"]
    assert json.loads((final / MANIFEST_NAME).read_text())["tinker_path"] == TINKER_PATH


def test_a_gzip_bomb_archive_is_refused_before_it_is_unpacked(tmp_path: Path) -> None:
    # Issue 8 F6: 64 MiB of zeros compress to ~64 KB; the member header declares its size,
    # so it is refused before a byte of it is written.
    from logits_cli.api.extract import MAX_EXPANSION

    files = {**GOOD_FILES, "adapter_model.safetensors": b"\0" * (64 * 1024 * 1024)}
    members = [*files.items(), ("checkpoint_complete", complete_document(files))]
    archive = build_tar(members, gzip=True)
    assert len(archive) * MAX_EXPANSION < 64 * 1024 * 1024
    with pytest.raises(IntegrityError) as caught:
        extract(tmp_path, archive)
    assert caught.value.message.startswith(
        "archive member 'adapter_model.safetensors' would unpack the archive past"
    )
    assert listing(tmp_path / "dest") == []


def test_more_members_than_the_bound_are_refused(tmp_path: Path) -> None:
    from logits_cli.api.extract import MAX_MEMBERS

    junk = {f"junk-{i}": b"" for i in range(MAX_MEMBERS)}
    files = {**GOOD_FILES, **junk}
    members = [*files.items(), ("checkpoint_complete", complete_document(files))]
    with pytest.raises(IntegrityError) as caught:
        extract(tmp_path, build_tar(members))
    assert caught.value.message == (
        f"the archive has more than {MAX_MEMBERS} members; a checkpoint has a few"
    )
    assert listing(tmp_path / "dest") == []


def test_a_truncated_plain_archive_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    archive = good_archive()
    # Cut inside the big member's data: its header still claims 5000 bytes.
    cut = archive.index(b"A" * 5000) + 100
    with pytest.raises(IntegrityError, match="truncated"):
        extract(tmp_path, archive[:cut])
    assert listing(tmp_path / "dest") == []


def test_kernel_copy_hashes_exactly_the_range_it_copies(tmp_path: Path) -> None:
    import os
    from concurrent.futures import ThreadPoolExecutor

    from logits_cli.api.kernel_copy import copy_range_hashed

    data = os.urandom(3 * 1024 * 1024 + 17)
    source = tmp_path / "source"
    source.write_bytes(b"header" + data + b"trailer")
    fd = os.open(source, os.O_RDONLY)
    try:
        with ThreadPoolExecutor(1) as pool:
            digest = copy_range_hashed(pool, fd, 6, len(data), str(tmp_path / "copy"))
            assert (tmp_path / "copy").read_bytes() == data
            assert digest == models.FileDigest(
                sha256=hashlib.sha256(data).hexdigest(), size=len(data)
            )
            with pytest.raises(FileExistsError):  # never through an existing name
                copy_range_hashed(pool, fd, 6, len(data), str(tmp_path / "copy"))
            with pytest.raises(IntegrityError, match="truncated"):
                copy_range_hashed(pool, fd, 6, len(data) + 100, str(tmp_path / "short"))
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "name",
    ["a\x1b]0;owned\x07", "d\nrm -rf x", "clear\x1b[2J", "c1\x9b2J", "del\x7f", "tab\tname"],
)
def test_member_names_with_control_characters_are_refused(tmp_path: Path, name: str) -> None:
    # Issue 21 G8: listed in checkpoint_complete with a correct digest, such a member was
    # installed (exit 0) and acted on the terminal of whoever listed the directory.
    files = {**GOOD_FILES, name: b"x"}
    members = [*files.items(), ("checkpoint_complete", complete_document(files))]
    with pytest.raises(IntegrityError) as caught:
        extract(tmp_path, build_tar(members))
    assert caught.value.message == f"unsafe archive member name {name!r} (a control character)"
    assert "\x1b" not in caught.value.message and "\n" not in caught.value.message
    assert listing(tmp_path / "dest") == []
