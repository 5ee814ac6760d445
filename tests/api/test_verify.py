"""Offline verification of downloaded checkpoints (logits_cli/api/verify.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from transfer_support import TINKER_PATH, checkpoint_for, good_archive

from logits_cli.api.extract import extract_checkpoint
from logits_cli.api.verify import MANIFEST_NAME, find_checkpoint_dirs, verify_checkpoint_dir


def downloaded(tmp_path: Path, name: str = "step-1") -> Path:
    archive = good_archive()
    source = tmp_path / f"{name}.tar"
    source.write_bytes(archive)
    dest = tmp_path / "dest"
    dest.mkdir(exist_ok=True)
    return extract_checkpoint(
        source,
        dest,
        name,
        checkpoint=checkpoint_for(archive),
        archive_sha256=hashlib.sha256(archive).hexdigest(),
        archive_size=len(archive),
        force=False,
    )


def test_a_fresh_download_verifies(tmp_path: Path) -> None:
    final = downloaded(tmp_path)
    (final / "notes.txt").write_text("extra files are fine")
    result = verify_checkpoint_dir(final)
    assert result.ok
    assert result.problems == []
    assert result.tinker_path == TINKER_PATH


def test_a_flipped_byte_is_caught_and_named(tmp_path: Path) -> None:
    final = downloaded(tmp_path)
    target = final / "adapter_model.safetensors"
    data = bytearray(target.read_bytes())
    data[1234] ^= 0x01
    target.write_bytes(bytes(data))
    result = verify_checkpoint_dir(final)
    assert not result.ok
    assert result.problems == ["adapter_model.safetensors: sha256 mismatch"]


def test_missing_and_resized_files_are_problems(tmp_path: Path) -> None:
    final = downloaded(tmp_path)
    (final / "adapter_config.json").unlink()
    (final / "adapter_model.safetensors").write_bytes(b"short")
    result = verify_checkpoint_dir(final)
    assert result.problems == [
        "adapter_config.json: missing",
        "adapter_model.safetensors: size 5, expected 5000",
    ]


def test_a_directory_without_manifest_is_a_problem(tmp_path: Path) -> None:
    result = verify_checkpoint_dir(tmp_path)
    assert not result.ok
    assert MANIFEST_NAME in result.problems[0]


def test_find_checkpoint_dirs(tmp_path: Path) -> None:
    first = downloaded(tmp_path, "a")
    second = downloaded(tmp_path, "b")
    (tmp_path / "dest" / "plain").mkdir()
    assert find_checkpoint_dirs(tmp_path / "dest") == [first, second]
    assert find_checkpoint_dirs(first) == [first]
    assert find_checkpoint_dirs(tmp_path / "missing") == []


def test_find_checkpoint_dirs_finds_both_layouts_and_follows_no_link(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    flat = downloaded(tmp_path, "a")  # download -o DIR: DIR/NAME
    synced = dest / "run%3A0" / "weights" / "b"  # sync -o DIR: DIR/RUN/KIND/NAME
    synced.parent.mkdir(parents=True)
    downloaded(tmp_path, "b").rename(synced)
    # Inside a checkpoint directory nothing is searched: a copy kept there is not another one.
    (flat / "old-copy").mkdir()
    (flat / "old-copy" / MANIFEST_NAME).write_bytes((flat / MANIFEST_NAME).read_bytes())
    (tmp_path / "elsewhere").mkdir()
    elsewhere = downloaded(tmp_path / "elsewhere", "c")
    (dest / "linked").symlink_to(elsewhere.parent, target_is_directory=True)
    (dest / "run%3A0" / "sampler_weights").symlink_to(elsewhere, target_is_directory=True)

    assert find_checkpoint_dirs(dest) == [flat, synced]
    # A root the caller names is read even when it is a link; only links below it are not.
    assert find_checkpoint_dirs(dest / "linked") == [dest / "linked" / "c"]
