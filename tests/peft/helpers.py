"""Raw adapters laid out as a download leaves them (manifest included), for the export tests."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from logits_cli import models
from logits_cli.api.verify import MANIFEST_NAME

TINKER_PATH = "tinker://run-1:train:0/sampler_weights/step-10"


def file_sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def mark_downloaded(directory: Path, tinker_path: str = TINKER_PATH) -> None:
    """Write the manifest a finished download writes, over the files already there."""
    files = {
        path.name: models.FileDigest(sha256=file_sha256(path), size=path.stat().st_size)
        for path in sorted(directory.iterdir())
        if path.name != MANIFEST_NAME
    }
    manifest = models.LocalManifest(
        tinker_path=tinker_path,
        checkpoint_id=tinker_path.split(":0/", 1)[-1],
        checkpoint_type="sampler",
        downloaded_at=datetime.now(UTC),
        files=files,
        content="adapter-only",
    )
    (directory / MANIFEST_NAME).write_text(manifest.model_dump_json())
