"""Which generation of the service a base URL speaks, remembered (docs/protocol.md §11.6).

The archive generation answers ``…/archive``; the files generation answers it 404, 405 or
410 for a checkpoint that was just listed. What was learnt is kept in this process and in
``$LOGITS_HOME/generations.json`` (base URL -> generation), so a nightly cron run does not
probe again. A remembered generation that turns out wrong (a deployment upgraded) is simply
learnt again: the file is a cache, never an authority.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

ARCHIVE = "archive"
FILES = "files"
GENERATIONS_FILE = "generations.json"

_known: dict[str, str] = {}


def _path(home: Path) -> Path:
    return home / GENERATIONS_FILE


def _read(home: Path) -> dict[str, str]:
    try:
        document = json.loads(_path(home).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict):
        return {}
    return {k: v for k, v in document.items() if isinstance(k, str) and v in (ARCHIVE, FILES)}


def remembered(home: Path, base_url: str) -> str | None:
    if base_url not in _known:
        found = _read(home).get(base_url)
        if found is None:
            return None
        _known[base_url] = found
    return _known[base_url]


def remember(home: Path, base_url: str, generation: str) -> None:
    """Record ``generation`` for ``base_url``; a cache that cannot be written is no error."""
    if _known.get(base_url) == generation and _read(home).get(base_url) == generation:
        return
    _known[base_url] = generation
    document = _read(home) | {base_url: generation}
    with contextlib.suppress(OSError):
        home.mkdir(parents=True, exist_ok=True)
        scratch = _path(home).with_name(f"{GENERATIONS_FILE}.{os.getpid()}.tmp")
        scratch.write_text(json.dumps(document, sort_keys=True, indent=1))
        os.replace(scratch, _path(home))
