"""Option and argument aliases shared by the commands, so each flag and each positional
argument means the same thing everywhere.

Most positional arguments (``...Argument``) are left out of the help's argument list
(``hidden``: still parsed and completed) and each command's docstring says what they are;
the two ``...Arg`` ones are listed with their help line.
"""

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from logits_cli.cli.completion_cache import complete_path, complete_run


class CheckpointType(StrEnum):
    training = "training"
    sampler = "sampler"
    external = "external"


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print only paths or ids, one per line.")
]
RunOpt = Annotated[
    str | None,
    typer.Option(
        "--run",
        "-r",
        help="Training run id (default: $LOGITS_RUN).",
        metavar="RUN",
        autocompletion=complete_run,
    ),
]
NamesRunOpt = Annotated[
    str | None,
    typer.Option(
        "--run",
        "-r",
        help="The run of a bare NAME or KIND/NAME (default: $LOGITS_RUN).",
        metavar="RUN",
        autocompletion=complete_run,
        show_default=False,
    ),
]
RunsArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="RUN",
        help="Runs (default: all your runs).",
        autocompletion=complete_run,
        show_default=False,
    ),
]
YesOpt = Annotated[
    bool, typer.Option("--yes", "-y", help="Do not ask; required when not on a terminal.")
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Show what would happen; change nothing.")
]
TimeoutOpt = Annotated[
    str | None,
    typer.Option(
        "--timeout", help="Give up waiting after this long (e.g. 10m, 90).", metavar="DURATION"
    ),
]
PathsArg = Annotated[
    list[str],
    typer.Argument(
        metavar="PATH",
        help="Checkpoint paths: logits://RUN/KIND/NAME or tinker://…; NAME may be @latest.",
        autocompletion=complete_path,
        show_default=False,
    ),
]
TypeOpt = Annotated[
    CheckpointType | None,
    typer.Option(
        "--type",
        "-t",
        help="Only checkpoints of this type (training, sampler or external).",
        metavar="TYPE",
        case_sensitive=False,
    ),
]
SinceOpt = Annotated[
    str | None,
    typer.Option("--since", help="Created at or after: ISO date or age (7d).", metavar="WHEN"),
]
BeforeOpt = Annotated[
    str | None,
    typer.Option("--before", help="Created before: ISO date or age (30d).", metavar="WHEN"),
]
AfterOpt = Annotated[
    str | None, typer.Option("--after", help="Created after: ISO date or age (1d).", metavar="WHEN")
]
HomeOpt = Annotated[
    str | None,
    typer.Option(
        "--home",
        help="State directory of the server's store (default: $LOGITS_HOME).",
        metavar="DIR",
        show_default=False,
    ),
]
LimitOpt = Annotated[
    int | None, typer.Option("--limit", min=1, metavar="N", help="Show at most N.")
]

_DESCRIBED_PATHS = typer.Argument(
    metavar="PATH", autocompletion=complete_path, show_default=False, hidden=True
)
PathsArgument = Annotated[list[str], _DESCRIBED_PATHS]
OptionalPathsArgument = Annotated[list[str] | None, _DESCRIBED_PATHS]
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
