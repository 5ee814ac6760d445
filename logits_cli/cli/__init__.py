"""The Typer command-line interface: one module per command group.

``main`` is the console-script entry point. It lives here, away from Typer, so that a bare
``logits --version`` (scripts, bug reports) is answered without building the command tree.
"""

import os
import sys


def version_line() -> str:
    from logits_cli import __version__

    return f"logits {__version__}"


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        print(version_line())
        return
    if "_LOGITS_COMPLETE" in os.environ:
        from logits_cli.cli.completion_cache import answer_without_typer

        answer = answer_without_typer(os.environ)
        if answer is not None:  # a checkpoint URI: answered from the cache alone
            print(answer)
            return
    # httpx imports its own command-line client (rich.console, rich.progress, pygments:
    # ~60 ms, tests/bench/startup.py) when its packages are installed, and Typer installs
    # them. This program never runs it; a None entry makes that one import fail at once,
    # which httpx answers with a stub ``httpx.main``. Set here, in our own process only:
    # a program that imports the library keeps httpx's command-line client.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    from logits_cli.cli.main import main as run_app

    run_app()
