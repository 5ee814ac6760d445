"""Blobs on an S3-compatible object store (docs/ARCHITECTURE.md §6, README "Running a team
server").

With ``--blobs s3://BUCKET/PREFIX`` the object store is where blobs are kept: archive blobs
under ``PREFIX/blobs/<sha256>`` and per-file export blobs under ``PREFIX/exports/<sha256>``,
content-addressed like the local directories. A blob is uploaded (multipart, with an S3
SHA-256 checksum the store verifies) before the row naming it commits, so a row never lacks
its object; downloads are the store's presigned GET URLs, so the bytes do not pass through
our process; the local directories are only a cache, refilled from the store when a save,
load or copy on another machine needs the bytes. Credentials, region and a non-AWS endpoint
come from boto3's usual sources (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``,
``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``, instance roles).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from logits_cli.errors import UsageError

AREAS = ("blobs", "exports")
# Parts of 64 MiB, four at a time: a 2 GiB archive is 32 parts, about the bandwidth of one
# machine, and well under S3's 10,000-part limit for any checkpoint.
_PART_SIZE = 64 * 1024 * 1024
_CONCURRENCY = 4


def parse_blobs_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET[/PREFIX]`` -> (bucket, prefix without slashes); else UsageError."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise UsageError(f"--blobs must be s3://BUCKET[/PREFIX], got {url!r}")
    return parts.netloc, parts.path.strip("/")


class ObjectStore:
    """One bucket and prefix. Thread-safe: boto3 clients may be shared between threads."""

    def __init__(self, url: str, client: Any = None) -> None:
        self.url = url
        self.bucket, self.prefix = parse_blobs_url(url)
        if client is None:
            import boto3
            from botocore.config import Config

            # Retries with backoff on throttling and 5xx, bounded (standard mode).
            client = boto3.client(
                "s3",
                config=Config(
                    retries={"max_attempts": 5, "mode": "standard"},
                    signature_version="s3v4",  # presigned URLs in SigV4, which every region takes
                ),
            )
        self._client = client

    def _key(self, area: str, sha256: str) -> str:
        assert area in AREAS
        return f"{self.prefix}/{area}/{sha256}" if self.prefix else f"{area}/{sha256}"

    def check(self) -> None:
        """Fail at start-up, in one line, when the bucket cannot be reached or read."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise UsageError(f"cannot use {self.url}: {exc}") from None

    def put(self, area: str, sha256: str, path: Path) -> None:
        """Upload ``path`` as the blob ``sha256`` unless it is there already (same key, same
        bytes: content addressing makes a second upload pointless)."""
        if self.exists(area, sha256):
            return
        from boto3.s3.transfer import TransferConfig

        self._client.upload_file(
            str(path),
            self.bucket,
            self._key(area, sha256),
            ExtraArgs={"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": sha256}},
            Config=TransferConfig(
                multipart_threshold=_PART_SIZE,
                multipart_chunksize=_PART_SIZE,
                max_concurrency=_CONCURRENCY,
            ),
        )

    def exists(self, area: str, sha256: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(area, sha256))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def fetch(self, area: str, sha256: str, path: Path) -> bool:
        """Download the blob into ``path`` (atomically, beside it); False when the store
        has no such object."""
        from botocore.exceptions import ClientError

        temp = path.with_name(f".{path.name}.fetch-{os.getpid()}")
        try:
            self._client.download_file(self.bucket, self._key(area, sha256), str(temp))
        except ClientError as exc:
            temp.unlink(missing_ok=True)
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        os.replace(temp, path)
        return True

    def presigned_url(self, area: str, sha256: str, expires_in: int) -> str:
        return str(
            self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._key(area, sha256)},
                ExpiresIn=expires_in,
            )
        )

    def delete(self, area: str, sha256: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._key(area, sha256))

    def listing(self, area: str) -> Iterator[tuple[str, datetime]]:
        """(sha256, last modified) of every blob in ``area``."""
        start = self._key(area, "")
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=start
        )
        for page in pages:
            for entry in page.get("Contents", []):
                yield entry["Key"][len(start) :], entry["LastModified"]
