"""Recent run ids and checkpoint paths for shell completion.

``ls`` commands remember what they listed in ``$LOGITS_HOME/completion-cache.json``;
completion callbacks read it. Completion must be instant and silent, so reading never
touches the network and every failure (missing file, bad JSON, unwritable home) is ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
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


def _run_of(path: str) -> str:
    return path.partition("://")[2].split("/", 1)[0]


def remember(
    home: Path,
    *,
    runs: Iterable[str] = (),
    paths: Iterable[str] = (),
    replace_runs: Iterable[str] | None = None,
    replace_all: bool = False,
) -> None:
    """Put these first in the cache (most recent first), dropping the oldest.

    ``paths`` may be the whole listing of the runs in ``replace_runs`` (or of every run,
    ``replace_all``): cached paths of those runs it does not hold are gone and dropped.
    """
    path = _cache_file(home)
    if path is None:
        return
    data = _read(path)
    fresh_paths = list(paths)
    stale_runs = set(replace_runs or ())
    if replace_all or stale_runs:
        data["paths"] = [
            p for p in data.get("paths", []) if not replace_all and _run_of(p) not in stale_runs
        ]
    for key, fresh in (("runs", list(runs)), ("paths", fresh_paths)):
        merged = list(dict.fromkeys([*fresh, *data.get(key, [])]))
        data[key] = merged[:MAX_ENTRIES]
    _write(path, data)


def forget(home: Path, paths: Iterable[str]) -> None:
    """Drop deleted checkpoints (in either scheme) from the cache."""
    gone = {_without_scheme(p) for p in paths}
    if not gone:
        return
    path = _cache_file(home)
    if path is None:
        return
    data = _read(path)
    if "paths" in data:
        data["paths"] = [p for p in data["paths"] if _without_scheme(p) not in gone]
        _write(path, data)


def _without_scheme(path: str) -> str:
    return path.partition("://")[2]


def _write(path: Path, data: dict[str, list[str]]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        import tempfile  # only when writing: a TAB never pays for it

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
    """Cached paths starting with ``incomplete``, plus ``…/KIND/@latest`` of each run and
    kind seen; a path cached in one scheme is offered in the scheme being typed."""
    scheme = incomplete.partition("://")[0] if "://" in incomplete else None
    candidates: dict[str, None] = {}
    for cached in _read(_cache_file()).get("paths", []):
        cached_scheme, _, rest = cached.partition("://")
        shown_scheme = scheme if scheme in ("logits", "tinker") else cached_scheme
        head, _, _name = rest.rpartition("/")
        for candidate in (f"{shown_scheme}://{rest}", f"{shown_scheme}://{head}/@latest"):
            if candidate.startswith(incomplete):
                candidates[candidate] = None
    return list(candidates)


URI_PREFIXES = ("logits://", "tinker://")


def answer_without_typer(environ: Mapping[str, str]) -> str | None:
    """The bash completion answer when it needs no Typer app, or None to leave the request
    to Typer.

    A checkpoint URI's candidates come from this cache alone, whatever the command; a
    subcommand or option name typed right after the command names comes from the generated
    table in ``command_names``. The console entry answers both before building the app:
    Typer coerces the parsed arguments through pydantic, ~150 ms a TAB cannot afford
    (tests/bench/completion.py: <= 100 ms). The protocol is Typer's
    (``_LOGITS_COMPLETE=complete_bash``, COMP_WORDS, COMP_CWORD; one candidate per line)."""
    if environ.get("_LOGITS_COMPLETE") != "complete_bash":
        return None
    import shlex

    try:
        words = shlex.split(environ.get("COMP_WORDS", ""))
        cword = int(environ.get("COMP_CWORD", ""))
    except ValueError:
        return None
    if cword < 1:
        return None
    incomplete = words[cword] if cword < len(words) else ""
    if incomplete.startswith(URI_PREFIXES):
        return "\n".join(complete_path(incomplete))
    return _command_or_option_names(words[1:cword], incomplete)


def _command_or_option_names(before: list[str], incomplete: str) -> str | None:
    """Names of the subcommands (or, for ``-…``, the options) of the command that ``before``
    names, when every word before the cursor is a command name; else None."""
    from logits_cli.cli.command_names import TREE

    node = TREE
    for word in before:
        node = node.get("commands", {}).get(word)
        if node is None:  # an option, a value or an argument: Typer knows what follows
            return None
    if incomplete.startswith("-"):
        names = node["options"]
    elif "commands" in node:
        names = list(node["commands"])
    else:  # an argument of a leaf command: its own completion (runs, paths) is Typer's
        return None
    return "\n".join(name for name in names if name.startswith(incomplete))
