"""``logits … --help`` without building the command tree: the page Typer printed the last
time for the same command words at the same terminal width, kept under
``$LOGITS_HOME/help-cache/`` (``$XDG_CACHE_HOME/logits/help/`` when LOGITS_HOME is unset).

Importing Typer alone takes about as long as the whole 100 ms budget of ``--help``
(tests/bench/startup.py prints that floor), so the page is printed from the cache when it
can be. It can be because our help is plain text (no rich markup, ``main.py``) that depends
only on the command words, the terminal width and this installation: the key hashes those
(the version, the size and mtime of every module of the package, the directory Typer is
installed in, the variables Typer and click read), so an upgrade or an edit is never
answered with a stale page. Any failure to read or write the cache is ignored: Typer then
answers as always. Only ``os.path`` here: pathlib, our config module and platformdirs would
cost more than the rest of the answer (on Linux the cache directory is the XDG one, which
is what platformdirs would say; elsewhere platformdirs is asked).
"""

from __future__ import annotations

import hashlib
import os
import sys

# Not ``from typing import TYPE_CHECKING``: importing typing costs milliseconds here, and
# type checkers treat any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TextIO

HELP_FLAGS = ("-h", "--help")
MAX_COMMAND_WORDS = 3
CACHE_DIR_NAME = "help-cache"
# Read by Typer or click when they lay out a page (width, colour, terminal detection).
_LAYOUT_VARIABLES = ("COLUMNS", "TERM", "NO_COLOR", "FORCE_COLOR", "TERMINAL_WIDTH")


def is_help_request(args: list[str]) -> bool:
    """``[WORD ...] --help``: command words only (no option that could change the page)."""
    if not 0 < len(args) <= MAX_COMMAND_WORDS + 1 or args[-1] not in HELP_FLAGS:
        return False
    return all(w.isascii() and w.replace("-", "").isalpha() and w.islower() for w in args[:-1])


def _fingerprint() -> str:
    """What the installed pages depend on besides the words and the width."""
    from importlib.util import find_spec

    from logits_cli import __version__

    parts = [__version__, sys.version]
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for directory, _, names in sorted(os.walk(package)):
        for name in sorted(names):
            if name.endswith(".py"):
                stat = os.stat(os.path.join(directory, name))
                parts.append(f"{directory}/{name}:{stat.st_size}:{stat.st_mtime_ns}")
    typer = find_spec("typer")
    if typer is not None and typer.origin is not None:
        installed = os.path.dirname(typer.origin)  # and the directory of its dist-info
        for directory in (installed, os.path.dirname(installed)):
            parts.append(f"{directory}:{os.stat(directory).st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _page_key(args: list[str]) -> str:
    try:
        columns: object = os.get_terminal_size(sys.__stdout__.fileno())  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        columns = None
    layout = [f"{name}={os.environ.get(name)}" for name in _LAYOUT_VARIABLES]
    layout += sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith("_TYPER"))
    text = "\n".join([" ".join(args), repr(columns), *layout])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _cache_dir() -> str:
    home = os.environ.get("LOGITS_HOME")
    if home:
        return os.path.join(home, CACHE_DIR_NAME)
    if sys.platform.startswith("linux"):
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        return os.path.join(xdg, "logits", "help")
    from platformdirs import user_cache_dir

    return os.path.join(user_cache_dir("logits"), "help")


def _page_path(args: list[str]) -> tuple[str, str]:
    fingerprint = _fingerprint()
    return os.path.join(_cache_dir(), f"{fingerprint}-{_page_key(args)}.txt"), fingerprint


def print_cached_help(path: str) -> bool:
    """Print the cached page at ``path``; False when there is none (or it is unreadable)."""
    try:
        with open(path, encoding="utf-8") as handle:
            page = handle.read()
    except (OSError, ValueError):
        return False
    sys.stdout.write(page)
    sys.stdout.flush()
    return True


class _Recorder:
    """sys.stdout as it is, also keeping what is written to it."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner
        self.written: list[str] = []

    def write(self, text: str) -> int:
        # click probes a stream with ``write(b"")``: the inner text stream refuses it.
        written = self.inner.write(text)
        self.written.append(text)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def answer(args: list[str], run_app: Callable[[], None]) -> bool:
    """Answer a help request (from the cache, else through Typer, keeping its page); False
    when ``args`` is not one this cache serves."""
    if not is_help_request(args):
        return False
    try:  # the key, once: it walks the package's files
        path, fingerprint = _page_path(args)
    except OSError:
        run_app()
        return True
    if not print_cached_help(path):
        run_and_remember(run_app, path, fingerprint)
    return True


def run_and_remember(run_app: Callable[[], None], path: str, fingerprint: str) -> None:
    """Let Typer answer, and keep its page when it printed one and exited 0."""
    recorder = _Recorder(sys.stdout)
    sys.stdout = recorder
    code: object = 0
    try:
        run_app()
    except SystemExit as exit_:
        code = exit_.code
        raise
    finally:
        sys.stdout = recorder.inner
        if code in (0, None) and recorder.written:
            _store("".join(recorder.written), path, fingerprint)


def _store(page: str, path: str, fingerprint: str) -> None:
    import tempfile
    from contextlib import suppress

    try:
        directory = os.path.dirname(path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        for stale in os.listdir(directory):  # pages of another installation
            if not stale.startswith(fingerprint):
                with suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, stale))
        fd, temp = tempfile.mkstemp(dir=directory, prefix=".page-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(page)
            os.replace(temp, path)  # whole or not at all: a reader never sees half a page
        finally:
            with suppress(FileNotFoundError):
                os.unlink(temp)
    except OSError:
        pass
