"""Which generation of the service a base URL speaks, remembered (docs/protocol.md §11.6).

The archive generation answers ``…/archive``; the files generation answers it 404, 405 or
410 for a checkpoint that was just listed. What was learnt is kept in this process and in
``$LOGITS_HOME/generations.json`` (base URL -> generation and when it was learnt), so a
nightly cron run does not probe again. The file is a cache, never an authority: an answer
older than ``MAX_AGE_SECONDS`` is learnt again, and so is one a request contradicts (a files
path refused by an archive deployment, ``files_generation.py``). It is read only when it is
ours (a regular file owned by this user, no symlink) and replaced atomically without
following a symlink (``diskio.read_private_file``/``write_private_file``).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from logits_cli.diskio import read_private_file, write_private_file

ARCHIVE = "archive"
FILES = "files"
GENERATIONS_FILE = "generations.json"
# A deployment can be upgraded (or a test server restarted in another mode at the same
# address); a day bounds how long a wrong answer can steer downloads.
MAX_AGE_SECONDS = 24 * 3600
MAX_FILE_BYTES = 1 << 20  # a few entries per base URL ever used; anything larger is not ours

# base URL -> (generation, when it was learnt, time.time())
_known: dict[str, tuple[str, float]] = {}
# Base URLs whose generation this process learnt or confirmed itself: not asked again here.
_learnt_here: set[str] = set()


def _path(home: Path) -> Path:
    return home / GENERATIONS_FILE


def _read(home: Path) -> dict[str, tuple[str, float]]:
    """The file's entries; absent, unreadable, foreign or malformed all read as empty."""
    try:
        data = read_private_file(_path(home), MAX_FILE_BYTES)
        document = json.loads(data) if data is not None else None
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict):
        return {}
    entries: dict[str, tuple[str, float]] = {}
    for base_url, entry in document.items():
        # Entries without a time (written by an older version) are skipped: learnt again.
        if not isinstance(entry, dict):
            continue
        generation, learnt = entry.get("generation"), entry.get("learnt")
        if generation in (ARCHIVE, FILES) and isinstance(learnt, (int, float)):
            entries[base_url] = (generation, float(learnt))
    return entries


def _fresh(entry: tuple[str, float] | None) -> str | None:
    if entry is None:
        return None
    generation, learnt = entry
    age = time.time() - learnt
    return generation if 0 <= age < MAX_AGE_SECONDS else None


def remembered(home: Path, base_url: str) -> str | None:
    """The generation learnt for ``base_url`` less than a day ago, else None."""
    if _fresh(_known.get(base_url)) is None:
        entry = _read(home).get(base_url)
        if _fresh(entry) is None:
            return None
        assert entry is not None
        _known[base_url] = entry
    return _known[base_url][0]


def remember(home: Path, base_url: str, generation: str) -> None:
    """Record ``generation`` for ``base_url`` as learnt now; a cache that cannot be written
    is no error."""
    now = time.time()
    _known[base_url] = (generation, now)
    _learnt_here.add(base_url)
    entries = _read(home)
    entries[base_url] = (generation, now)
    document = {url: {"generation": g, "learnt": at} for url, (g, at) in entries.items()}
    with contextlib.suppress(OSError):
        payload = json.dumps(document, sort_keys=True, indent=1).encode()
        write_private_file(_path(home), payload)


def learnt_here(base_url: str) -> bool:
    """Whether this process learnt (or confirmed) ``base_url``'s generation itself."""
    return base_url in _learnt_here
