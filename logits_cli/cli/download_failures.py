"""What ``logits ckpt download`` says about the checkpoints it could not download: one line
per failure, naming the checkpoint once, with "did you mean" for a name that is not there.

- One checkpoint: its error is the command's ``Error:`` line (and exit code).
- Several, stderr a terminal: after the bars, one ``Error: PATH: reason`` line (and hint) per
  failure, then the count.
- Several, stderr not a terminal (cron, ``| tee``): one timestamped ``failed PATH: reason``
  line as each fails, hint included, then the count as the ``Error:`` line.

The count exits 8, or 10 when every failure is a weights/ checkpoint not exported because
``--no-export`` was given (the exit code of that refusal on its own).
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from logits_cli import errors
from logits_cli.cli.failures import hint_for, report_error
from logits_cli.cli.output import log_line
from logits_cli.cli.wording import counted
from logits_cli.uri import KINDS, SCHEMES, CheckpointRef

if TYPE_CHECKING:
    from logits_cli.api.client import LogitsClient

# How alike two checkpoint names must be (difflib's ratio) to suggest one for the other:
# step_1000 for step_100 or stepp_1000, not step_2000 for step_1000_final.
CLOSE_ENOUGH = 0.85


def without_path(message: str, ref: CheckpointRef) -> str:
    """``message`` with ``ref`` left out, in either scheme, for a line that names it first."""
    for form in dict.fromkeys(str(ref.with_scheme(scheme)) for scheme in SCHEMES):
        if message.startswith(f"{form}: "):
            return message[len(form) + 2 :]
        if message.startswith(f"{form} "):
            return "it " + message[len(form) + 1 :]
        if f" {form}" in message:
            return message.replace(f" {form}", "", 1)
    return message


async def did_you_mean(client: LogitsClient, ref: CheckpointRef, *, bare: bool) -> str | None:
    """A checkpoint of ``ref``'s run named like ``ref`` (the same name under the other kind,
    or a small edit away), written as the user wrote paths: KIND/NAME when ``bare``, else a
    full path. Costs one listing, asked only after a not-found."""
    if ref.kind not in KINDS or ref.name.startswith("@"):
        return None
    try:
        listed = await client.list_checkpoints(ref.run_id)
    except errors.LogitsError:
        return None  # no such run, or it cannot be listed: nothing better to say
    ids = [c.checkpoint_id for c in listed if c.checkpoint_id != ref.checkpoint_id]
    names = {i.split("/", 1)[-1] for i in ids}
    close = difflib.get_close_matches(ref.name, names, n=1, cutoff=CLOSE_ENOUGH)
    # The same name under another kind first, then the closest name, in ref's kind if it
    # is there.
    wanted = [ref.name] if ref.name in names else close
    candidates = [i for i in ids if i.split("/", 1)[-1] in wanted]
    candidates.sort(key=lambda i: not i.startswith(f"{ref.kind}/"))
    if not candidates:
        return None
    found = candidates[0]
    return found if bare else f"{ref.scheme}://{ref.run_id}/{found}"


class DownloadFailures:
    """The failures of one download command, reported as the module doc says."""

    def __init__(self, total: int, *, live: bool, bare: bool) -> None:
        self.total = total
        self.live = live  # bars on a terminal: per-item lines wait for the end
        self.bare = bare  # some path was a bare name: suggestions are bare too
        self.failures: list[tuple[CheckpointRef, errors.LogitsError]] = []

    async def add(
        self, client: LogitsClient, ref: CheckpointRef, error: errors.LogitsError
    ) -> None:
        if isinstance(error, errors.NotFoundError) and error.hint is None:
            suggestion = await did_you_mean(client, ref, bare=self.bare)
            if suggestion is not None:
                error.hint = f"did you mean {suggestion}?"
        self.failures.append((ref, error))
        if self.total > 1 and not self.live:
            hint = hint_for(error)
            log_line(
                f"failed {ref}: {without_path(error.message, ref)}" + (f"; {hint}" if hint else "")
            )

    def finish(self) -> None:
        """Raise what the command exits with, once its output is printed."""
        if not self.failures:
            return
        if self.total == 1:
            raise self.failures[0][1]
        if self.live:
            for ref, error in self.failures:
                shown = type(error)(f"{ref}: {without_path(error.message, ref)}")
                shown.hint, shown.option = error.hint, error.option
                report_error(shown)
        what = (
            f"{len(self.failures)} of {counted(self.total, 'checkpoint')} could not be downloaded"
        )
        if all(error.option == "allow_export" for _, error in self.failures):
            raise errors.UnsupportedError(
                f"{what}: this deployment downloads them only through an export, and "
                "--no-export was given",
                option="allow_export",
            )
        raise errors.PartialFailureError(what)
