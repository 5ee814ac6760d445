"""Where ``logits ckpt download`` puts what it fetched: ``-o DIR`` (DIR/NAME), ``-o FILE.tar``
with ``--archive-only``, or ``-o -`` (the archive on stdout), as curl's ``-o`` would.

``-o DIR`` lays checkpoints out as DIR/NAME while their names are unique among the paths of
the command. When two different checkpoints share a name (``weights/X`` and
``sampler_weights/X``, the cookbook's pattern, or ``X`` of two runs), every checkpoint of
that command goes to DIR/RUN/KIND/NAME instead: the layout ``sync`` uses, so ``sync`` and
``verify`` know those copies, and one command never mixes two layouts. A per-command choice
(rather than renaming only the second checkpoint, as a browser's ``X (1)`` would) keeps
each path meaningful: KIND and RUN are in it, and the printed paths say where each went.

The engine always installs into a directory; the two file forms stage there (a hidden
directory beside FILE.tar, or under ``$LOGITS_HOME/staging``) so a killed download resumes
when the same command runs again, and only a verified archive is renamed to FILE.tar or
written to stdout: a pipe never receives bytes that failed their digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from logits_cli import errors
from logits_cli.diskio import WRITE_PIECE, fsync_directory
from logits_cli.uri import CheckpointRef

STDOUT = Path("-")


@dataclass(frozen=True)
class DownloadTarget:
    directory: Path  # where the engine installs (DIR, or a staging directory)
    archive_file: Path | None = None  # -o FILE.tar: the verified archive is renamed here
    to_stdout: bool = False  # -o -: the verified archive is written to stdout

    def shown(self, installed: Path) -> str:
        """Where the user will find what was installed at ``installed``, for log lines."""
        if self.to_stdout:
            return "stdout"
        return str(self.archive_file or installed)

    @property
    def archive_only(self) -> bool:
        return self.archive_file is not None or self.to_stdout


def clashing_names(refs: Sequence[CheckpointRef]) -> tuple[CheckpointRef, CheckpointRef] | None:
    """Two different checkpoints of ``refs`` (``@latest`` already resolved) that would land
    in the same DIR/NAME, or None. The same checkpoint named in both schemes is one."""
    seen: dict[str, CheckpointRef] = {}
    for ref in refs:
        first = seen.setdefault(ref.name, ref)
        if first.with_scheme(ref.scheme) != ref:
            return first, ref
    return None


def install_parent(directory: Path, ref: CheckpointRef, *, by_run_and_kind: bool) -> Path:
    """The directory ``ref`` is installed in (as NAME): DIR, or DIR/RUN/KIND (sync's)."""
    if not by_run_and_kind:
        return directory
    from logits_cli.api.sync_items import checkpoint_dir

    return checkpoint_dir(directory, ref).parent


def resolve_target(
    output: Path, refs: Sequence[CheckpointRef], *, archive_only: bool, home: Path
) -> DownloadTarget:
    """``-o -`` and ``--archive-only -o FILE.tar`` take one checkpoint; anything else is DIR."""
    to_stdout = output == STDOUT
    to_file = archive_only and output.suffix == ".tar" and not output.is_dir()
    if not (to_stdout or to_file):
        return DownloadTarget(output)
    form = "-o -" if to_stdout else f"-o {output}"
    if len(refs) != 1:
        raise errors.UsageError(
            f"{form} takes one checkpoint, not {len(refs)}",
            hint="download several into a directory: -o DIR",
        )
    if to_stdout:
        key = hashlib.sha256(str(refs[0]).encode()).hexdigest()[:16]
        return DownloadTarget(home / "staging" / key, to_stdout=True)
    staging = output.parent / f".{output.name}.logits"
    return DownloadTarget(staging, archive_file=output)


def deliver(target: DownloadTarget, archive: Path) -> Path | None:
    """Move the verified ``archive`` to its place; the path to print (None: on stdout)."""
    if target.archive_file is not None:
        os.replace(archive, target.archive_file)
        with contextlib.suppress(OSError):  # the rename itself survives a crash
            fsync_directory(target.archive_file.parent)
        shutil.rmtree(target.directory, ignore_errors=True)
        return target.archive_file
    with archive.open("rb") as source:
        out = sys.stdout.buffer
        try:
            shutil.copyfileobj(source, out, WRITE_PIECE)
            out.flush()
        except BrokenPipeError:
            # The reader went away (``| head -c``): what it read was verified; the rest is
            # kept for a re-run. Point stdout at /dev/null so exit does not fail to flush.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise errors.LogitsError(
                "stdout was closed before the whole archive was written",
                hint="the verified archive is kept: the same command writes it again at once",
            ) from None
    shutil.rmtree(target.directory, ignore_errors=True)
    return None
