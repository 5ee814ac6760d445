"""The one error decorator: every command's failures become ``Error:``/``Hint:`` lines on
stderr and the exit code of docs/ARCHITECTURE.md §4."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer

from logits_cli import errors
from logits_cli.config import debug_enabled

P = ParamSpec("P")
T = TypeVar("T")

# Next steps for errors raised without their own hint.
_DEFAULT_HINTS: list[tuple[type[errors.LogitsError], str]] = [
    (
        errors.AuthError,
        "set LOGITS_API_KEY (or LOGITS_API_KEY_CMD); a server admin creates keys with "
        "`logits server keys create USER`",
    ),
    (errors.UnavailableError, "check the service address with `logits config show`"),
    (errors.BusyError, "let it finish, or pass --lock-wait 10m to wait for it"),
]

# The library names no flag: an error says which of its options is involved
# (``LogitsError.option``) and the flag hint is written here, per command where the flags
# differ (``None``: any command). ``url`` exports only when asked, since its export outlives
# the command; ``download`` and ``sync`` export unless told not to.
_FLAG_HINTS: dict[tuple[str, str | None], str] = {
    ("allow_export", "url"): "pass --export to allow it (the export is kept for an hour)",
    ("allow_export", None): "drop --no-export to export (one training session on the service "
    "per checkpoint)",
    ("archive_only", None): "drop --archive-only; the files are installed in DIR/NAME",
    ("adapter_only", None): "drop --adapter-only to install the whole checkpoint",
    ("force", None): "pass --force to replace it",
    ("base_config", None): "pass --base-config FILE|DIR with the base model's config.json",
    ("base_model", None): "pass --base-model NAME, or --base-config FILE|DIR",
    ("lock_wait", None): "let it finish, or pass --lock-wait 10m to wait for it",
    ("delete_run", None): "only a logits server offers it; the service keeps runs (their "
    "checkpoints can be deleted with `logits ckpt rm --run RUN`)",
}

_command_name: str | None = None


def hint_for(error: errors.LogitsError) -> str | None:
    option = getattr(error, "option", None)
    if option is not None:
        flag_hint = _FLAG_HINTS.get((option, _command_name)) or _FLAG_HINTS.get((option, None))
        if flag_hint:
            return flag_hint
    if error.hint:
        return error.hint
    for cls, hint in _DEFAULT_HINTS:
        if isinstance(error, cls):
            return hint
    return None


def report_error(error: errors.LogitsError) -> None:
    """The ``Error:`` line and, where useful, a ``Hint:`` line, on stderr (a message may
    quote a server: its control characters are shown escaped, never sent raw)."""
    from logits_cli.cli.tables import terminal_text

    sys.stderr.write(f"Error: {terminal_text(error.message)}\n")
    hint = hint_for(error)
    if hint:
        sys.stderr.write(f"Hint: {terminal_text(hint)}\n")
    sys.stderr.flush()


_interrupt_note: str | None = None


def on_interrupt(note: str) -> None:
    """What Ctrl-C tells the user the command keeps, e.g. a resumable download."""
    global _interrupt_note
    _interrupt_note = note


def handle_errors(command: Callable[P, T]) -> Callable[P, T]:
    """Wrap a command so no known error shows a traceback (unless LOGITS_DEBUG=1)."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        global _interrupt_note, _command_name
        _interrupt_note = None  # each command says for itself what Ctrl-C keeps
        _command_name = command.__name__
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except errors.LogitsError as error:
            if debug_enabled():
                traceback.print_exc()
            report_error(error)
            raise typer.Exit(error.exit_code) from None
        except (KeyboardInterrupt, typer.Abort):
            # typer.Abort is how a prompt reports Ctrl-C (or end of input).
            sys.stderr.write(
                f"\nInterrupted: {_interrupt_note}\n" if _interrupt_note else "\nInterrupted\n"
            )
            raise typer.Exit(errors.EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            # The reader went away (`logits ckpt ls | head`): nothing left to say to it.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(errors.EXIT_OK) from None
        except Exception as error:
            # Not an error we know: a bug. Only the type is shown, because the message of a
            # foreign exception may carry a URL with a signature in it.
            if debug_enabled():
                traceback.print_exc()
            sys.stderr.write(f"Error: internal error ({type(error).__name__}); this is a bug\n")
            if not debug_enabled():
                sys.stderr.write("Hint: run again with LOGITS_DEBUG=1 to see the traceback\n")
            raise typer.Exit(errors.EXIT_ERROR) from None

    return wrapper
