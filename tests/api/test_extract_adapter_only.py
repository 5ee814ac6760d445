"""``--adapter-only`` extraction (api/extract.py, issue 23 point 6): only the adapter files
are written, the other members are admitted and size-checked but read past, on plain and
gzip archives alike."""

from __future__ import annotations

import hashlib
import random
import tarfile
from pathlib import Path

import pytest
from transfer_support import GOOD_FILES, build_tar, checkpoint_for, complete_document, listing

from logits_cli import models
from logits_cli.api.extract import ADAPTER_FILES, extract_checkpoint
from logits_cli.api.verify import MANIFEST_NAME, missing_content, verify_checkpoint_dir
from logits_cli.errors import IntegrityError

OPTIMIZER = random.Random(23).randbytes(70_000)  # incompressible, like real moments
FULL_FILES = {**GOOD_FILES, "optimizer_state.safetensors": OPTIMIZER}


def full_archive(*, gzip: bool = False, listed: dict[str, bytes] | None = None) -> bytes:
    members: list[tarfile.TarInfo | tuple[str, bytes]] = sorted(FULL_FILES.items())
    members.append(("checkpoint_complete", complete_document(listed or FULL_FILES)))
    return build_tar(members, gzip=gzip)


def extract_adapter(tmp_path: Path, archive: bytes) -> Path:
    source = tmp_path / "archive.tar"
    source.write_bytes(archive)
    dest = tmp_path / "dest"
    dest.mkdir(exist_ok=True)
    return extract_checkpoint(
        source,
        dest,
        "step-1",
        checkpoint=checkpoint_for(archive),
        archive_sha256=hashlib.sha256(archive).hexdigest(),
        archive_size=len(archive),
        force=False,
        adapter_only=True,
    )


@pytest.mark.parametrize("gzip", [False, True])
def test_only_the_adapter_is_written_and_the_manifest_says_so(tmp_path: Path, gzip: bool) -> None:
    archive = full_archive(gzip=gzip)
    final = extract_adapter(tmp_path, archive)
    assert listing(final) == sorted([*ADAPTER_FILES, MANIFEST_NAME])
    for name in ADAPTER_FILES:
        assert (final / name).read_bytes() == GOOD_FILES[name]
    manifest = models.LocalManifest.model_validate_json((final / MANIFEST_NAME).read_bytes())
    assert manifest.content == "adapter-only"
    assert sorted(manifest.files) == sorted(ADAPTER_FILES)
    assert manifest.archive_sha256 == hashlib.sha256(archive).hexdigest()
    assert verify_checkpoint_dir(final).ok
    # A full download of the same checkpoint must not take this copy for a whole one.
    assert missing_content(manifest, adapter_only=False) == [
        "optimizer state missing (an adapter-only copy)"
    ]
    assert missing_content(manifest, adapter_only=True) == []
    assert listing(tmp_path / "dest") == ["step-1"]  # no staging left


@pytest.mark.parametrize("gzip", [False, True])
def test_a_member_read_past_is_still_size_checked(tmp_path: Path, gzip: bool) -> None:
    lie = {**FULL_FILES, "optimizer_state.safetensors": OPTIMIZER + b"x"}
    with pytest.raises(IntegrityError, match=r"optimizer_state\.safetensors: size 70000"):
        extract_adapter(tmp_path, full_archive(gzip=gzip, listed=lie))
    assert listing(tmp_path / "dest") == []


def test_an_unlisted_member_read_past_is_still_refused(tmp_path: Path) -> None:
    members: list[tarfile.TarInfo | tuple[str, bytes]] = [
        *sorted(FULL_FILES.items()),
        ("junk", b"j"),
        ("checkpoint_complete", complete_document(FULL_FILES)),
    ]
    with pytest.raises(IntegrityError, match="'junk' is not listed"):
        extract_adapter(tmp_path, build_tar(members))
    assert listing(tmp_path / "dest") == []


def test_an_archive_without_an_adapter_has_nothing_to_install(tmp_path: Path) -> None:
    files = {"optimizer_state.safetensors": OPTIMIZER}
    members: list[tarfile.TarInfo | tuple[str, bytes]] = [
        *files.items(),
        ("checkpoint_complete", complete_document(files)),
    ]
    with pytest.raises(IntegrityError, match=r"no adapter_config\.json"):
        extract_adapter(tmp_path, build_tar(members))
    assert listing(tmp_path / "dest") == []
