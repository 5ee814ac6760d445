"""Which checkpoints a ``ckpt`` command acts on: paths as typed (full URIs, or a bare
``NAME`` / ``KIND/NAME`` in the default run), or a run filtered by retention options; and
the per-item report of a bulk command."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from logits_cli import errors
from logits_cli.cli.completion_cache import complete_run
from logits_cli.cli.failures import report_error
from logits_cli.cli.options import CheckpointType
from logits_cli.cli.timeparse import MAX_DURATION_S, optional_point_in_time
from logits_cli.uri import (
    KINDS,
    SCHEMES,
    TYPE_TO_KIND,
    CheckpointRef,
    validate_name,
    validate_run_id,
)

if TYPE_CHECKING:
    from logits_cli import models
    from logits_cli.api.client import LogitsClient

FilterRunOpt = Annotated[
    str | None,
    typer.Option(
        "--run",
        "-r",
        help="Select from this run with the filters below (or: the run of bare names).",
        metavar="RUN",
        autocompletion=complete_run,
        show_default=False,
    ),
]
KeepLastOpt = Annotated[
    int | None,
    typer.Option("--keep-last", min=0, metavar="N", help="Never select the newest N (per type)."),
]
KeepNameOpt = Annotated[
    list[str] | None,
    typer.Option("--keep-name", help="Never select this name (repeatable).", metavar="NAME"),
]


def kind_of(checkpoint_type: CheckpointType | None) -> str | None:
    """The URI kind of a ``--type`` value (None: both kinds)."""
    return TYPE_TO_KIND[checkpoint_type.value] if checkpoint_type else None


class _NoRunOption:
    """The ``default_run`` of a command without a ``--run`` of its own."""


NO_RUN_OPTION = _NoRunOption()


def _default_run() -> str | None:
    """$LOGITS_RUN (or the profile's run), for commands without a --run of their own."""
    from logits_cli import config

    return config.resolve().run


def parse_path(text: str, default_run: str | _NoRunOption | None = NO_RUN_OPTION) -> CheckpointRef:
    """A full URI, or what ``save`` prints: ``NAME`` or ``KIND/NAME`` in the default run.

    The one resolver of bare names. ``default_run`` is what the command's ``--run`` resolved
    to (``settings_for(ctx, run=run).run``: the option, else ``$LOGITS_RUN``, else the
    profile's run); a command without a ``--run`` leaves it out, and its error then does
    not tell the user to pass an option the command would reject.
    """
    if "://" in text:
        return CheckpointRef.parse(text, allow_latest=True)
    segments = text.split("/")
    if len(segments) > 2 or not all(segments) or (len(segments) == 2 and segments[0] not in KINDS):
        return CheckpointRef.parse(text, allow_latest=True)  # raises its own clear error
    has_run_option = not isinstance(default_run, _NoRunOption)
    run = _default_run() if isinstance(default_run, _NoRunOption) else default_run
    if run is None:
        ways = "pass --run RUN, set LOGITS_RUN," if has_run_option else "set LOGITS_RUN"
        raise errors.UsageError(
            f"{text!r} names no run; {ways} or give the full path logits://RUN/KIND/NAME",
            hint="`logits ckpt ls -q` prints full paths",
        )
    kind, name = segments if len(segments) == 2 else ("weights", segments[0])
    return CheckpointRef.parse(f"logits://{validate_run_id(run)}/{kind}/{name}", allow_latest=True)


def parse_refs(
    texts: Sequence[str], default_run: str | _NoRunOption | None = NO_RUN_OPTION
) -> list[CheckpointRef]:
    """Every path parsed up front, so a typo fails before any request is sent."""
    if not texts:
        raise errors.UsageError("no checkpoint path given")
    return unique_refs(parse_path(text, default_run) for text in texts)


def names_a_bare_path(texts: Iterable[str]) -> bool:
    """Whether any path is a bare ``NAME`` or ``KIND/NAME``, whose URI the CLI wrote."""
    return any("://" not in text for text in texts)


async def in_server_scheme(
    client: LogitsClient, refs: list[CheckpointRef], *, bare: bool
) -> list[CheckpointRef]:
    """``refs`` in the scheme the server writes (``tinker://`` on a ``--uri-scheme tinker``
    server), read from the first run's latest checkpoint, when some ref was built from a
    bare name: messages and output then show the URI ``ckpt ls`` shows. Full URIs as typed
    cost no request; a run that cannot be read or has no checkpoint changes nothing (the
    command's own request reports what is wrong)."""
    if not bare or not refs:
        return refs
    try:
        run = await client.get_run(refs[0].run_id, access_scope="accessible")
    except errors.LogitsError:
        return refs
    written = [c for c in (run.last_checkpoint, run.last_sampler_checkpoint) if c is not None]
    scheme = written[0].tinker_path.partition("://")[0] if written else None
    if scheme not in SCHEMES:
        return refs
    return [ref.with_scheme(scheme) for ref in refs]


def unique_refs(refs: Iterable[CheckpointRef]) -> list[CheckpointRef]:
    """Each checkpoint once, in first-named order, whatever the scheme: a checkpoint named
    twice must not be deleted twice (a spurious failure) or published twice at once (a race
    over which call reports the change)."""
    unique: dict[tuple[str, str, str], CheckpointRef] = {}
    for ref in refs:
        unique.setdefault((ref.run_id, ref.kind, ref.name), ref)
    return list(unique.values())


@dataclass
class BulkReport:
    """Per-item failures of a bulk command; decides the exit code once output is printed."""

    total: int
    verb: str
    failures: list[tuple[str, errors.LogitsError]] = field(default_factory=list)
    noun: str = "checkpoints"  # what the items are, in the plural

    def add(self, label: str, error: errors.LogitsError | None) -> None:
        if error is not None:
            self.failures.append((label, error))

    def add_all(self, outcome: Iterable[tuple[str, errors.LogitsError | None]]) -> None:
        for label, error in outcome:
            self.add(label, error)

    def finish(self) -> None:
        if not self.failures:
            return
        if self.total == 1:
            raise self.failures[0][1]
        for label, error in self.failures:
            report_error(type(error)(f"{label}: {error.message}"))
        raise errors.PartialFailureError(
            f"{len(self.failures)} of {self.total} {self.noun} could not be {self.verb}"
        )


@dataclass
class Targets:
    """What a selection resolved to: the refs to act on, the checkpoints of the filtered
    run left alone (only those of the selected type), and what is known of each target."""

    refs: list[CheckpointRef]
    kept: list[models.Checkpoint]
    details: dict[str, models.Checkpoint]


@dataclass(frozen=True)
class Selection:
    """Which checkpoints a bulk command acts on: explicit paths, or a filtered run."""

    refs: list[CheckpointRef]
    run: str | None = None
    kind: str | None = None
    bare_names: bool = False
    before: datetime | None = None
    after: datetime | None = None
    keep_last: int | None = None
    keep_names: frozenset[str] = frozenset()

    async def targets(self, client: LogitsClient, *, with_details: bool = False) -> Targets:
        """The targets, ``@latest`` resolved; ``with_details`` also fetches each named
        checkpoint (sizes and ages for a prompt), leaving out those that cannot be read."""
        if self.run is None:
            # Resolving @latest may name a checkpoint also given by its name.
            named = await in_server_scheme(client, self.refs, bare=self.bare_names)
            refs = unique_refs([await client.resolve(ref) for ref in named])
            details: dict[str, models.Checkpoint] = {}
            if with_details:
                import asyncio

                found = await asyncio.gather(
                    *(client.get_checkpoint(ref) for ref in refs), return_exceptions=True
                )
                for ref, checkpoint in zip(refs, found, strict=True):
                    if not isinstance(checkpoint, BaseException):
                        details[str(ref)] = checkpoint
            return Targets(refs, [], details)
        from logits_cli.api.bulk import select_checkpoints

        selected, kept = select_checkpoints(
            await client.list_checkpoints(self.run),
            kind=self.kind,
            before=self.before,
            after=self.after,
            keep_last=self.keep_last,
            keep_names=self.keep_names,
        )
        refs = [CheckpointRef.parse(c.tinker_path, any_kind=True) for c in selected]
        # A checkpoint of another type was never a candidate, so it was not "kept".
        kept = [c for c in kept if self.kind is None or c.kind == self.kind]
        return Targets(refs, kept, {str(r): c for r, c in zip(refs, selected, strict=True)})


def selection_from_options(
    paths: list[str] | None,
    run: str | None,
    checkpoint_type: CheckpointType | None,
    before: str | None,
    after: str | None,
    keep_last: int | None,
    keep_names: list[str] | None,
    *,
    default_run: str | None = None,
) -> Selection:
    """The selection the options describe; ``default_run`` is the run of bare names."""
    filters_given = any(
        v is not None for v in (checkpoint_type, before, after, keep_last, keep_names)
    )
    if paths and run is not None and any("://" in p for p in paths):
        raise errors.UsageError("give checkpoint paths or --run with filters, not both")
    if paths:
        if filters_given:
            raise errors.UsageError(
                "--type, --before, --after, --keep-last and --keep-name need --run, not paths"
            )
        # With paths, --run is the run of bare names (``rm step_1 --run R``).
        return Selection(
            parse_refs(paths, default_run=run or default_run),
            bare_names=names_a_bare_path(paths),
        )
    if run is None:
        raise errors.UsageError("give checkpoint paths, or --run RUN with filters")
    now = datetime.now(UTC)
    return Selection(
        [],
        run=validate_run_id(run),
        kind=kind_of(checkpoint_type),
        before=optional_point_in_time(before, now=now),
        after=optional_point_in_time(after, now=now),
        keep_last=keep_last,
        keep_names=frozenset(validate_name(n) for n in keep_names or []),
    )


def extended_ttl(expires_at: datetime | None, extra_seconds: int, now: datetime) -> int:
    """The TTL that moves an expiry back by ``extra_seconds``.

    A checkpoint that never expired is extended from now: the result is the same as
    ``--set``, which is the only reading that gives it an expiry at all.
    """
    base = max(expires_at, now) if expires_at is not None else now
    seconds = math.ceil((base + timedelta(seconds=extra_seconds) - now).total_seconds())
    if seconds > MAX_DURATION_S:
        raise errors.UsageError(
            "extending it would make it expire more than 10 years from now, the longest allowed"
        )
    return seconds
