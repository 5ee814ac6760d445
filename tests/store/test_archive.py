"""Deterministic checkpoint archives (docs/protocol.md §7.1, §7.4)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from logits_cli import models
from logits_cli.errors import IntegrityError, UsageError
from logits_cli.store import archive, lora

CREATED = datetime(2025, 6, 1, 12, 0, 5, tzinfo=UTC)
URI = "logits://5f1e3c2a-8d4b-4c6e-9a7f-1b2c3d4e5f60:train:0/weights/step-0100"
WEIGHTS_MEMBERS = [
    "adapter_config.json",
    "adapter_model.safetensors",
    "optimizer_state.safetensors",
    "checkpoint_complete",
]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    directory = tmp_path / "state"
    lora.init_state(directory, "logits/tiny", models.LoraConfig(rank=4, seed=11))
    return directory


def build(state: Path, blobs: Path, **overrides: object) -> tuple[Path, str, int]:
    arguments: dict = {"kind": "weights", "tinker_path": URI, "created": CREATED} | overrides
    return archive.build_archive(state, blobs, **arguments)


def raw_headers(data: bytes) -> list[bytes]:
    """Every header block of a tar stream, extension headers included, in order."""
    headers = []
    offset = 0
    while data[offset : offset + 512] != b"\0" * 512:
        header = data[offset : offset + 512]
        headers.append(header)
        size = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
        offset += 512 + -(-size // 512) * 512
    return headers


def test_same_inputs_give_the_same_bytes(state: Path, tmp_path: Path) -> None:
    first = build(state, tmp_path / "one")
    copy = tmp_path / "copy"
    # Other inodes, other mtimes, no remembered digests.
    shutil.copytree(state, copy, copy_function=shutil.copyfile)
    second = build(copy, tmp_path / "two")

    assert first[0].read_bytes() == second[0].read_bytes()
    assert first[1:] == second[1:]


def test_blob_is_named_by_its_sha256(state: Path, tmp_path: Path) -> None:
    path, sha256, size = build(state, tmp_path / "blobs")
    data = path.read_bytes()
    assert path == tmp_path / "blobs" / sha256
    assert hashlib.sha256(data).hexdigest() == sha256
    assert len(data) == size
    assert size % 10240 == 0
    assert [p.name for p in (tmp_path / "blobs").iterdir()] == [sha256]


def test_members_and_headers(state: Path, tmp_path: Path) -> None:
    path, _, _ = build(state, tmp_path / "blobs")
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        assert tar.pax_headers == {}
    assert [m.name for m in members] == WEIGHTS_MEMBERS
    for member in members:
        assert member.isreg()
        assert (member.mode, member.uid, member.gid) == (0o644, 0, 0)
        assert (member.uname, member.gname) == ("", "")
        assert member.mtime == 1748779205
        assert member.pax_headers == {}

    headers = raw_headers(path.read_bytes())
    assert [h[:100].rstrip(b"\0").decode() for h in headers] == WEIGHTS_MEMBERS
    for header in headers:
        assert header[156:157] == b"0"  # regular file: no pax (x, g) or GNU (L, K) headers
        assert header[257:265] == b"ustar\x0000"


def test_archive_ends_with_zero_blocks_and_padding(state: Path, tmp_path: Path) -> None:
    data = build(state, tmp_path / "blobs")[0].read_bytes()
    with tarfile.open(tmp_path / "blobs" / hashlib.sha256(data).hexdigest()) as tar:
        last = tar.getmember("checkpoint_complete")
    end_of_members = last.offset_data + -(-last.size // 512) * 512
    assert len(data) == max(10240, -(-(end_of_members + 1024) // 10240) * 10240)
    assert data[end_of_members:] == b"\0" * (len(data) - end_of_members)


def test_checkpoint_complete_is_canonical(state: Path, tmp_path: Path) -> None:
    path, _, _ = build(state, tmp_path / "blobs")
    files = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers()[:-1]:
            data = tar.extractfile(member).read()
            files[member.name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            assert data == (state / member.name).read_bytes()
        manifest = tar.extractfile("checkpoint_complete").read()

    expected = (
        '{"checkpoint_type":"training","created":"2025-06-01T12:00:05Z","files":'
        + json.dumps(files, sort_keys=True, separators=(",", ":"))
        + f',"tinker_path":"{URI}"}}\n'
    )
    assert manifest.decode() == expected
    assert archive.read_manifest(path) == models.CheckpointComplete.model_validate_json(manifest)


def test_sampler_archive(state: Path, tmp_path: Path) -> None:
    uri = URI.replace("/weights/", "/sampler_weights/")
    created = datetime(2025, 6, 1, 12, 0, 5, 123456, tzinfo=UTC)
    path, _, _ = build(
        state, tmp_path / "blobs", kind="sampler_weights", tinker_path=uri, created=created
    )

    with tarfile.open(path) as tar:
        assert tar.getnames() == [
            "adapter_config.json",
            "adapter_model.safetensors",
            "checkpoint_complete",
        ]
        assert {m.mtime for m in tar.getmembers()} == {1748779205}
    manifest = archive.read_manifest(path)
    assert manifest.checkpoint_type == "sampler"
    assert manifest.created == created
    assert manifest.tinker_path == uri
    assert sorted(manifest.files) == ["adapter_config.json", "adapter_model.safetensors"]
    assert b'"created":"2025-06-01T12:00:05.123456Z"' in path.read_bytes()


def test_uri_and_time_change_the_archive(state: Path, tmp_path: Path) -> None:
    base = build(state, tmp_path / "a")[1]
    other_uri = build(state, tmp_path / "b", tinker_path=URI.replace("step-0100", "step-0200"))[1]
    later = build(state, tmp_path / "c", created=datetime(2025, 6, 1, 12, 0, 6, tzinfo=UTC))[1]
    assert len({base, other_uri, later}) == 3


def test_members_spanning_many_chunks(
    state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = build(state, tmp_path / "big-chunks")[0].read_bytes()
    monkeypatch.setattr(archive, "COPY_CHUNK", 1000)  # not a block multiple, on purpose
    monkeypatch.setattr(archive, "_WRITEBACK_EVERY", 4000)  # background flushes mid-member
    plain = tmp_path / "plain"
    # Without remembered digests, so both digests are updated per chunk.
    shutil.copytree(state, plain, copy_function=shutil.copyfile)

    for source, blobs in ((state, "small-chunks"), (plain, "small-chunks-plain")):
        assert build(source, tmp_path / blobs)[0].read_bytes() == expected


def test_unknown_kind(state: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=re.escape("unknown checkpoint kind 'other'")):
        build(state, tmp_path / "blobs", kind="other")


def test_failed_build_leaves_nothing_behind(state: Path, tmp_path: Path) -> None:
    (state / "optimizer_state.safetensors").unlink()
    blobs = tmp_path / "blobs"
    with pytest.raises(FileNotFoundError):
        build(state, blobs)
    assert list(blobs.iterdir()) == []
    assert build(state, blobs, kind="sampler_weights")[0].exists()


def test_read_manifest_of_an_archive_without_one(tmp_path: Path) -> None:
    incomplete = tmp_path / "incomplete.tar"
    member = tmp_path / "adapter_config.json"
    member.write_text("{}")
    with tarfile.open(incomplete, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(member, arcname=member.name)
    with pytest.raises(
        IntegrityError, match="checkpoint archive has no checkpoint_complete manifest"
    ):
        archive.read_manifest(incomplete)

    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar" * 100)
    with pytest.raises(IntegrityError, match="checkpoint archive is corrupt"):
        archive.read_manifest(garbage)
