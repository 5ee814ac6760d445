"""Moved to ``cli/options.py`` (issue 22: one alias module); this module goes once the
modules being edited in parallel import from there. Import from ``cli.options``."""

from logits_cli.cli.options import (
    DirsArgument,
    NameArgument,
    OptionalPathsArgument,
    OptionalRunArgument,
    PathArgument,
    PathsArgument,
    PrefixArgument,
    RunsArgument,
    UserArgument,
)

__all__ = [
    "DirsArgument",
    "NameArgument",
    "OptionalPathsArgument",
    "OptionalRunArgument",
    "PathArgument",
    "PathsArgument",
    "PrefixArgument",
    "RunsArgument",
    "UserArgument",
]
