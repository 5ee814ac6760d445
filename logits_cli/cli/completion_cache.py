"""Recent run ids and checkpoint paths for shell completion.

``ls`` commands remember what they listed in ``$LOGITS_HOME/completion-cache.json``;
completion callbacks read it. Completion must be instant and silent, so reading never
touches the network and every failure (missing file, bad JSON, unwritable home) is ignored.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

CACHE_FILE_NAME = "completion-cache.json"
MAX_ENTRIES = 500


def _cache_file(home: Path | None = None) -> Path | None:
    if home is not None:
        return home / CACHE_FILE_NAME
    try:
        from logits_cli import config

        return config.resolve().home / CACHE_FILE_NAME
    except Exception:
        return None


def _read(path: Path | None) -> dict[str, list[str]]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        key: [v for v in values if isinstance(v, str)]
        for key, values in data.items()
        if isinstance(values, list)
    }


def remember(home: Path, *, runs: Iterable[str] = (), paths: Iterable[str] = ()) -> None:
    """Put these first in the cache (most recent first), dropping the oldest."""
    path = _cache_file(home)
    if path is None:
        return
    data = _read(path)
    for key, fresh in (("runs", list(runs)), ("paths", list(paths))):
        merged = list(dict.fromkeys([*fresh, *data.get(key, [])]))
        data[key] = merged[:MAX_ENTRIES]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=".completion-", delete=False, encoding="utf-8"
        ) as handle:
            json.dump(data, handle)
        os.replace(handle.name, path)
    except OSError:
        return


def complete_run(incomplete: str) -> list[str]:
    return [r for r in _read(_cache_file()).get("runs", []) if r.startswith(incomplete)]


def complete_path(incomplete: str) -> list[str]:
    return [p for p in _read(_cache_file()).get("paths", []) if p.startswith(incomplete)]
