"""Helpers shared by the transfer, extract and verify tests."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from logits_cli import models
from logits_cli.api import open_client
from logits_cli.api.client import LogitsClient
from logits_cli.api.retry import RetryPolicy
from logits_cli.api.verify import MANIFEST_NAME, verify_checkpoint_dir
from logits_cli.config import Settings
from logits_cli.uri import CheckpointRef

# Backoff that keeps fault tests quick; the policy's shape (full jitter, deadline) is unchanged.
FAST_RETRIES = RetryPolicy(base_delay_s=0.01, max_delay_s=0.05, deadline_s=30)


def remote_client(server: Any, home: Path, user: str = "alice") -> LogitsClient:
    settings = Settings(
        home=home,
        base_url=server.base_url,
        profile=None,
        run=None,
        debug=False,
        api_key_value=server.api_key(user),
    )
    return open_client(settings, retry_policy=FAST_RETRIES)


def embedded_client(home: Path) -> LogitsClient:
    settings = Settings(home=home, base_url=None, profile=None, run=None, debug=False)
    return open_client(settings, retry_policy=FAST_RETRIES)


async def make_checkpoint(
    client: LogitsClient, *, base_model: str = "logits/tiny", rank: int = 4, name: str = "ckpt"
) -> models.Checkpoint:
    run = await client.create_run(base_model, rank=rank, seed=1)
    return await client.save(run.training_run_id, name)


def ref_of(checkpoint: models.Checkpoint) -> CheckpointRef:
    return CheckpointRef.parse(checkpoint.tinker_path)


def server_blob(store: Any, checkpoint: models.Checkpoint) -> Path:
    ref = ref_of(checkpoint)
    assert checkpoint.sha256 is not None
    return store.blob_for(ref.run_id, ref.kind, ref.name, checkpoint.sha256).path


def archive_members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def assert_matches_archive(final: Path, archive: Path) -> None:
    """Every archive member is in ``final`` byte for byte, and nothing else but the manifest."""
    members = archive_members(archive)
    assert listing(final) == sorted([*members, MANIFEST_NAME])
    for name, data in members.items():
        assert (final / name).read_bytes() == data, name
    assert verify_checkpoint_dir(final).ok


# -- hand-made archives -----------------------------------------------------------------------

TINKER_PATH = "logits://run-1:train:0/weights/step-1"


def checkpoint_for(archive: bytes, tinker_path: str = TINKER_PATH) -> models.Checkpoint:
    ref = CheckpointRef.parse(tinker_path)
    return models.Checkpoint(
        checkpoint_id=ref.checkpoint_id,
        checkpoint_type="training",
        time="2026-01-01T00:00:00Z",
        tinker_path=tinker_path,
        size_bytes=len(archive),
        sha256=hashlib.sha256(archive).hexdigest(),
    )


def complete_document(files: dict[str, bytes], tinker_path: str = TINKER_PATH) -> bytes:
    listed = {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for name, data in files.items()
    }
    document = {
        "checkpoint_type": "training",
        "created": "2026-01-01T00:00:00Z",
        "files": listed,
        "tinker_path": tinker_path,
    }
    return (json.dumps(document, sort_keys=True, separators=(",", ":")) + "\n").encode()


def build_tar(members: list[tarfile.TarInfo | tuple[str, bytes]], *, gzip: bool = False) -> bytes:
    """A tar of ``(name, data)`` regular files and prepared special ``TarInfo`` members."""
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w:gz" if gzip else "w", format=tarfile.PAX_FORMAT
    ) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


GOOD_FILES = {
    "adapter_config.json": b'{"r": 4}\n',
    "adapter_model.safetensors": b"A" * 5000,
}


def good_archive(**kwargs: Any) -> bytes:
    members: list[tarfile.TarInfo | tuple[str, bytes]] = list(GOOD_FILES.items())
    members.append(("checkpoint_complete", complete_document(GOOD_FILES)))
    return build_tar(members, **kwargs)
