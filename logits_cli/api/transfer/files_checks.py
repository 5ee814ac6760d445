"""What a files-generation server sends, checked before it is trusted (docs/protocol.md §11.3):
the URL map before anything is created in DEST, then the fetched files before they are
installed (the ``checkpoint_complete`` listing, the PEFT adapter's structure)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import ValidationError

from logits_cli import models
from logits_cli.api.extract import (
    COMPLETE_MEMBER,
    MAX_COMPLETE_SIZE,
    MAX_MEMBERS,
    check_complete_listing,
)
from logits_cli.api.verify import check_member_name
from logits_cli.errors import IntegrityError, UnsupportedError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit
FETCHED_SCHEMES = ("http", "https")


def check_url_map(urls: Mapping[str, str]) -> list[str]:
    """The file names of a URL map, refused exactly like archive members (§7.5): plain names
    at the root, no ``..``, no duplicates that differ only in case, a bounded count; and
    every URL one we fetch (http or https: a ``file://`` URL would read this machine)."""
    names = sorted(urls)
    if not names:
        raise IntegrityError("the server sent an empty list of files for this checkpoint")
    if len(names) > MAX_MEMBERS:
        raise IntegrityError(
            f"the server lists {len(names)} files; a checkpoint has a few (at most {MAX_MEMBERS})"
        )
    folded: dict[str, str] = {}
    for name in names:
        try:
            check_member_name(name)
            if name.startswith(".logits"):
                raise IntegrityError(name)
        except IntegrityError:
            raise IntegrityError(f"unsafe file name {name!r} in the server's URL map") from None
        if name.endswith(".age"):
            raise UnsupportedError(
                f"the server sent {name}, an age-encrypted file; logits downloads unencrypted "
                "exports only"
            )
        clash = folded.setdefault(name.casefold(), name)
        if clash != name:
            raise IntegrityError(f"the URL map lists both {clash!r} and {name!r}")
        check_file_url(name, urls[name])
    for required in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if required not in urls:
            raise IntegrityError(f"the export has no {required}: not a PEFT adapter")
    return names


def check_file_url(name: str, url: str) -> None:
    """A file's URL must be http(s) with a host; checked for every map, refreshed ones too."""
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname
    except (ValueError, TypeError, AttributeError):
        scheme, host = "", None
    if scheme not in FETCHED_SCHEMES or not host:
        shown = f"a {scheme}: URL" if scheme else "an unreadable URL"
        raise IntegrityError(
            f"the server's URL map gives {name!r} {shown}; only http and https URLs are fetched"
        )


def check_listing(data: Path, files: dict[str, models.FileDigest]) -> None:
    """When the server sends a ``checkpoint_complete`` manifest among the files, every other
    file must be listed in it with its size and sha256 (as in an archive, §7.4)."""
    if COMPLETE_MEMBER not in files:
        return
    if files[COMPLETE_MEMBER].size > MAX_COMPLETE_SIZE:
        raise IntegrityError(f"{COMPLETE_MEMBER} is implausibly large")
    try:
        complete = models.CheckpointComplete.model_validate_json(
            (data / COMPLETE_MEMBER).read_bytes()
        )
    except (OSError, ValidationError):
        raise IntegrityError(f"{COMPLETE_MEMBER} is unreadable") from None
    check_complete_listing(files, complete, what="file")


def check_adapter(data: Path) -> None:
    """A structural check of the PEFT adapter: what every loader reads first."""
    try:
        config = json.loads((data / ADAPTER_CONFIG).read_bytes())
    except (OSError, ValueError):
        raise IntegrityError(f"{ADAPTER_CONFIG} is not valid JSON") from None
    if not isinstance(config, dict):
        raise IntegrityError(f"{ADAPTER_CONFIG} is not a JSON object")
    weights = data / ADAPTER_WEIGHTS
    try:
        size = weights.stat().st_size
        with open(weights, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if size < 8 or length > min(MAX_SAFETENSORS_HEADER, size - 8):
                raise ValueError("header length")
            header = json.loads(handle.read(length))
        if not isinstance(header, dict):
            raise ValueError("header type")
        body = size - 8 - length
        for tensor, entry in header.items():
            if tensor == "__metadata__":
                continue
            start, end = entry["data_offsets"]
            if not (0 <= start <= end <= body) or not isinstance(entry["shape"], list):
                raise ValueError(tensor)
    except (OSError, ValueError, KeyError, TypeError):
        raise IntegrityError(f"{ADAPTER_WEIGHTS} is not a readable safetensors file") from None
