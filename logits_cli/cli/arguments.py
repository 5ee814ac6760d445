"""Positional arguments of the commands, described in each command's help text.

Typer 0.29 prints a Python type beside every argument it lists (``PATH <list[str]>``) and
offers no public switch for it, so these arguments are left out of the generated list
(``hidden``: still parsed and completed) and each command's docstring says what they are.
"""

from pathlib import Path
from typing import Annotated

import typer

from logits_cli.cli.completion_cache import complete_path, complete_run

PATH_HELP = (
    "PATH is logits://RUN/KIND/NAME (or tinker://…), or NAME or KIND/NAME in the run of "
    "--run or $LOGITS_RUN; NAME may be @latest."
)

_PATHS = typer.Argument(
    metavar="PATH", autocompletion=complete_path, show_default=False, hidden=True
)
PathsArgument = Annotated[list[str], _PATHS]
OptionalPathsArgument = Annotated[list[str] | None, _PATHS]
PathArgument = Annotated[
    str,
    typer.Argument(metavar="PATH", autocompletion=complete_path, show_default=False, hidden=True),
]
RunsArgument = Annotated[
    list[str] | None,
    typer.Argument(metavar="RUN", autocompletion=complete_run, show_default=False, hidden=True),
]
OptionalRunArgument = Annotated[
    str | None,
    typer.Argument(metavar="RUN", autocompletion=complete_run, show_default=False, hidden=True),
]
NameArgument = Annotated[str, typer.Argument(metavar="NAME", show_default=False, hidden=True)]
DirsArgument = Annotated[list[Path], typer.Argument(metavar="DIR", show_default=False, hidden=True)]
UserArgument = Annotated[str, typer.Argument(metavar="USER", show_default=False, hidden=True)]
PrefixArgument = Annotated[str, typer.Argument(metavar="PREFIX", show_default=False, hidden=True)]
