"""How our help pages write positional arguments, through Typer's public extension point.

Typer 0.29 (pinned, pyproject.toml) writes a required argument as ``{PATH}...`` in the
usage line and a Python type beside it in the argument list (``PATH <list[str]>``). Our
help says ``PATH...`` and ``[RUN]...`` and describes each argument in words
(tests/cli/test_help_layout.py). Every command is built with ``PlainArgumentsCommand``,
the ``cls`` Typer documents for custom commands; the groups make it their default.
"""

from collections.abc import Callable
from typing import Any, TypeVar

import typer
import typer.core

CommandFunction = TypeVar("CommandFunction", bound=Callable[..., Any])


def usage_name(argument: Any) -> str:
    """``PATH``, ``[PATH]`` when optional, and ``...`` after one that takes several (a
    metavar that already ends in ``...`` is not given a second one)."""
    name = argument.metavar or argument.name
    name = name if argument.required else f"[{name}]"
    repeats = argument.nargs != 1 and not name.rstrip("]").endswith("...")
    return name + ("..." if repeats else "")


class PlainArgumentsCommand(typer.core.TyperCommand):
    """A Typer command whose usage line and argument list carry no Python types."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                pieces.append(usage_name(param))
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append((param.metavar or param.name or "", record[1]))
            else:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class CommandGroup(typer.Typer):
    """``typer.Typer`` whose commands are ``PlainArgumentsCommand`` unless told otherwise."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[CommandFunction], CommandFunction]:
        kwargs.setdefault("cls", PlainArgumentsCommand)
        return super().command(*args, **kwargs)
