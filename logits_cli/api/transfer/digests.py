"""Which digest to check a download against, and hashing it (docs/protocol.md §6.3 step 6)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logits_cli.api.transfer.tuning import HASH_CHUNK
from logits_cli.errors import (
    IntegrityError,
)

# -- digests (docs/protocol.md §6.3 step 6) -----------------------------------------------------


@dataclass(frozen=True)
class ExpectedDigest:
    algorithm: str  # "sha256" | "md5" | "crc32c"
    value: bytes
    source: str  # where it came from, for messages


_REPR_SHA256 = re.compile(r"(?:^|,)\s*sha-256\s*=\s*:([A-Za-z0-9+/=]+):")
_ETAG_SHA256 = re.compile(r'"sha256:([0-9a-fA-F]{64})"')
_ETAG_MD5 = re.compile(r'"([0-9a-fA-F]{32})"')
_GOOG_HASH = re.compile(r"(?:^|,)\s*(md5|crc32c)=([A-Za-z0-9+/=]+)")


def _b64(text: str, length: int) -> bytes | None:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    return raw if len(raw) == length else None


def choose_digest(
    headers: Mapping[str, str], checkpoint_sha256: str | None
) -> ExpectedDigest | None:
    """The first available digest, in the order of docs/protocol.md §6.3 step 6."""
    repr_digest = headers.get("repr-digest", "")
    if match := _REPR_SHA256.search(repr_digest):
        value = _b64(match.group(1), 32)
        if value is not None:
            return ExpectedDigest("sha256", value, "Repr-Digest")
    etag = headers.get("etag", "")
    if match := _ETAG_SHA256.fullmatch(etag):
        return ExpectedDigest("sha256", bytes.fromhex(match.group(1)), "ETag")
    if checkpoint_sha256 and re.fullmatch(r"[0-9a-fA-F]{64}", checkpoint_sha256):
        return ExpectedDigest("sha256", bytes.fromhex(checkpoint_sha256), "checkpoint sha256")
    goog: dict[str, str] = {
        m.group(1): m.group(2) for m in _GOOG_HASH.finditer(headers.get("x-goog-hash", ""))
    }
    for algorithm, length in (("md5", 16), ("crc32c", 4)):
        if algorithm in goog and (value := _b64(goog[algorithm], length)) is not None:
            return ExpectedDigest(algorithm, value, f"x-goog-hash {algorithm}")
    if match := _ETAG_MD5.fullmatch(etag):
        return ExpectedDigest("md5", bytes.fromhex(match.group(1)), "ETag md5")
    return None


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


class Crc32c:
    """CRC-32C (Castagnoli), as Google Cloud Storage reports it. Pure Python, hence slow; it is
    only used when a server offers no sha256 and no md5."""

    _TABLE = _crc32c_table()

    def __init__(self) -> None:
        self._crc = 0xFFFFFFFF

    def update(self, data: bytes) -> None:
        crc, table = self._crc, self._TABLE
        for byte in data:
            crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        self._crc = crc

    def digest(self) -> bytes:
        return (self._crc ^ 0xFFFFFFFF).to_bytes(4, "big")


def new_hasher(algorithm: str) -> Any:
    return Crc32c() if algorithm == "crc32c" else hashlib.new(algorithm)


def hash_range(
    fd: int, offset: int, count: int, hashers: dict[str, Any], buffer: memoryview
) -> None:
    """Feed ``count`` bytes of the file at ``offset`` to ``hashers``, read into ``buffer``
    (reused, so hashing allocates nothing)."""
    while count > 0:
        got = os.preadv(fd, [buffer[: min(count, len(buffer))]], offset)
        if not got:
            raise IntegrityError("the part file is shorter than its journal says")
        for hasher in hashers.values():
            hasher.update(buffer[:got])
        offset += got
        count -= got


def hash_file(path: Path, algorithms: set[str]) -> dict[str, bytes]:
    """Digests of the whole file, one read pass for all ``algorithms``."""
    hashers = {name: new_hasher(name) for name in algorithms}
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.digest() for name, hasher in hashers.items()}
