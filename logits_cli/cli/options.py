"""Option aliases shared by the commands, so each flag means the same thing everywhere."""

from enum import StrEnum
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
_PATHS = typer.Argument(
    metavar="PATH",
    help="Checkpoint paths: logits://RUN/KIND/NAME or tinker://…; NAME may be @latest.",
    autocompletion=complete_path,
    show_default=False,
)
PathsArg = Annotated[list[str], _PATHS]
OptionalPathsArg = Annotated[list[str] | None, _PATHS]
PathArg = Annotated[
    str,
    typer.Argument(
        metavar="PATH",
        help="Checkpoint path: logits://RUN/KIND/NAME or tinker://…; NAME may be @latest.",
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
