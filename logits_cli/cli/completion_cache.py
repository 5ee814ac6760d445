"""Recent run ids and checkpoint paths for shell completion.

``ls`` commands remember what they listed in ``$LOGITS_HOME/completion-cache.json``;
completion callbacks read it. Completion must be instant and silent, so reading never
touches the network and every failure (missing file, bad JSON, unwritable home) is ignored.

What a server lists becomes text a shell inserts into a command line, so only what is
inert there is kept or offered (issue 21 G8): checkpoint paths that parse
(``uri.CheckpointRef.parse``: no whitespace, no control character, names from
``[A-Za-z0-9._-]``) and run ids that are valid and printable; the bash script quotes the
rest (``;``, ``$``, … are legal in an opaque run id). The file is ours only if it is a
regular file of this user in a directory of this user (``diskio.read_private_file``):
a symlink or another user's file is treated as absent and replaced, never followed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from logits_cli import diskio
from logits_cli.errors import UsageError
from logits_cli.uri import CheckpointRef, validate_run_id

CACHE_FILE_NAME = "completion-cache.json"
MAX_ENTRIES = 500
MAX_CACHE_BYTES = 4 * 1024 * 1024  # 1,000 entries of a few hundred bytes; more is not ours


def _cache_file(home: Path | None = None) -> Path | None:
    if home is not None:
        return home / CACHE_FILE_NAME
    try:
        from logits_cli import config

        return config.resolve().home / CACHE_FILE_NAME
    except Exception:
        return None


def is_safe_run(text: object) -> bool:
    """A run id worth offering: valid (``uri.validate_run_id``) and printable (no C1 control
    or other invisible character a terminal could act on)."""
    if not isinstance(text, str) or not text.isprintable():
        return False
    try:
        validate_run_id(text)
    except UsageError:
        return False
    return True


def is_safe_path(text: object) -> bool:
    """A checkpoint path worth offering: it parses (kinds of newer deployments included)
    and is printable."""
    if not isinstance(text, str) or not text.isprintable():
        return False
    try:
        CheckpointRef.parse(text, any_kind=True)
    except UsageError:
        return False
    return True


_SAFE = {"runs": is_safe_run, "paths": is_safe_path}


def _read(path: Path | None) -> dict[str, list[str]]:
    if path is None:
        return {}
    try:
        raw = diskio.read_private_file(path, MAX_CACHE_BYTES)
        data = json.loads(raw) if raw is not None else None
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        key: [v for v in values if _SAFE[key](v)]
        for key, values in data.items()
        if key in _SAFE and isinstance(values, list)
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
    fresh_paths = [p for p in paths if is_safe_path(p)]
    stale_runs = set(replace_runs or ())
    if replace_all or stale_runs:
        data["paths"] = [
            p for p in data.get("paths", []) if not replace_all and _run_of(p) not in stale_runs
        ]
    fresh_runs = [r for r in runs if is_safe_run(r)]
    for key, fresh in (("runs", fresh_runs), ("paths", fresh_paths)):
        merged = list(dict.fromkeys([*fresh, *data.get(key, [])]))
        data[key] = merged[:MAX_ENTRIES]
    _write(path, data)


def forget(home: Path, paths: Iterable[str], *, runs: Iterable[str] = ()) -> None:
    """Drop deleted checkpoints (in either scheme), and deleted runs with their paths, from
    the cache."""
    gone = {_without_scheme(p) for p in paths}
    gone_runs = set(runs)
    if not gone and not gone_runs:
        return
    path = _cache_file(home)
    if path is None:
        return
    data = _read(path)
    if "paths" in data:
        data["paths"] = [
            p
            for p in data["paths"]
            if _without_scheme(p) not in gone and _run_of(p) not in gone_runs
        ]
    if "runs" in data:
        data["runs"] = [r for r in data["runs"] if r not in gone_runs]
    _write(path, data)


def _without_scheme(path: str) -> str:
    return path.partition("://")[2]


def _write(path: Path, data: dict[str, list[str]]) -> None:
    try:
        diskio.write_private_file(path, json.dumps(data).encode())
    except OSError:
        return


def complete_run(incomplete: str) -> list[str]:
    return [r for r in _read(_cache_file()).get("runs", []) if r.startswith(incomplete)]


def complete_path(incomplete: str) -> list[str]:
    """Cached paths starting with ``incomplete``, plus ``…/KIND/@latest`` of each run and
    kind seen; a path cached in one scheme is offered in the scheme being typed. A word that
    is not (yet) a URI is first read as a bare ``NAME`` or ``KIND/NAME`` of the run the line
    names (``complete_bare_name``); URIs are offered when no bare name matches."""
    if "://" not in incomplete:
        bare = complete_bare_name(incomplete, _default_run(os.environ))
        if bare:
            return bare
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


def _default_run(environ: Mapping[str, str]) -> str | None:
    """The run a bare name on the command line being completed names: ``--run RUN`` (or
    ``-r RUN``, ``--run=RUN``) on the line, else ``$LOGITS_RUN`` or the profile's run."""
    import shlex

    try:
        words = shlex.split(environ.get("COMP_WORDS", ""))
    except ValueError:
        words = []
    for index, word in enumerate(words):
        if word.startswith("--run="):
            return word.removeprefix("--run=")
        if word in ("--run", "-r") and index + 1 < len(words):
            return words[index + 1]
    try:
        from logits_cli import config

        return config.resolve().run
    except Exception:
        return None


def complete_bare_name(incomplete: str, run: str | None) -> list[str]:
    """The cached checkpoints of ``run`` as the bare words ``parse_path`` reads: ``NAME`` of
    a weights/ checkpoint and ``KIND/NAME`` of every kind, those starting with
    ``incomplete``. Nothing without a run. Only cached paths that parse are read
    (``_read``), so every word offered is made of the name grammar's characters."""
    if run is None:
        return []
    candidates: dict[str, None] = {}
    for cached in _read(_cache_file()).get("paths", []):
        if _run_of(cached) != run:
            continue
        kind, _, name = _without_scheme(cached).partition("/")[2].partition("/")
        words = [f"{kind}/{name}"] + ([name] if kind == "weights" else [])
        for word in words:
            if word.startswith(incomplete):
                candidates[word] = None
    return sorted(candidates, key=lambda word: ("/" in word, word))


def answer_without_typer(environ: Mapping[str, str]) -> str | None:
    """The bash completion answer for a checkpoint URI word, or None to leave the request
    to Typer.

    A checkpoint URI's candidates come from this cache alone, whatever the command, and the
    console entry answers them before building the app: Typer coerces the parsed arguments
    through pydantic, ~150 ms a TAB on a path should not pay (tests/bench/completion.py:
    <= 150 ms). Command and option names are Typer's own completion. The protocol is Typer's
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
    if _is_bare_path_word(words, cword, incomplete):
        bare = complete_bare_name(incomplete, _default_run(environ))
        if bare:  # else Typer answers (URIs of every run, say)
            return "\n".join(bare)
    return None


# The ``ckpt`` commands whose positional arguments are checkpoint paths.
PATH_COMMANDS = frozenset({"download", "info", "url", "publish", "unpublish", "ttl", "rm", "load"})


def _is_bare_path_word(words: list[str], cword: int, incomplete: str) -> bool:
    """Whether the word being completed is surely a PATH argument of a ``ckpt`` command: not
    an option, and not after one without ``=`` (it may be that option's value: ``-o DIR``,
    ``--set 7d``; those words are left to Typer, which knows the options)."""
    return (
        cword >= 3
        and words[1:2] == ["ckpt"]
        and len(words) > 2
        and words[2] in PATH_COMMANDS
        and not incomplete.startswith("-")
        and not (words[cword - 1].startswith("-") and "=" not in words[cword - 1])
    )
