"""Every public checkpoint the caller can see, with its owner (``ckpt ls --public``).

The wire has no list of other users' checkpoints; it has the list of accessible runs (runs of
others with at least one public, unexpired checkpoint, docs/protocol.md §2.4, §5.5), and a
run's listing, which for another user's run holds only its public checkpoints (§5.6.1). So:
the caller's own checkpoints in one paged listing, then each accessible run of another user.
This works on every deployment: nothing here is an extension of ours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from logits_cli import models
from logits_cli.api.bulk import apply_concurrently
from logits_cli.errors import NotFoundError
from logits_cli.uri import CheckpointRef

if TYPE_CHECKING:
    from logits_cli.api.client import LogitsClient


@dataclass
class PublicListing:
    """The public checkpoints found, the owner of each run that holds one (as the run's
    ``model_owner`` says), and which runs are the caller's own."""

    checkpoints: list[models.Checkpoint] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)
    own_runs: set[str] = field(default_factory=set)

    def owner_of(self, checkpoint: models.Checkpoint) -> str | None:
        return self.owners.get(run_of(checkpoint))


def run_of(checkpoint: models.Checkpoint) -> str:
    return CheckpointRef.parse(checkpoint.tinker_path, any_kind=True).run_id


async def own_run_ids(client: LogitsClient) -> dict[str, str]:
    """The caller's runs and their owner (the caller, as the server names it)."""
    return {run.training_run_id: run.model_owner async for run in client.iter_runs()}


async def public_checkpoints(
    client: LogitsClient,
    *,
    others: bool = True,
    on_progress: Callable[[int], None] | None = None,
    jobs: int = 8,
) -> PublicListing:
    """Public checkpoints of the caller and, with ``others``, of every user whose runs the
    service lists as accessible. ``on_progress`` gets the count found so far.

    A run of another user that answers 404 lost its last public checkpoint since the run
    listing (unpublished, expired, deleted): it is left out, not an error."""
    listing = PublicListing()
    listing.owners = await own_run_ids(client)
    listing.own_runs = set(listing.owners)
    async for checkpoint in client.iter_all_checkpoints():
        if checkpoint.public:
            listing.checkpoints.append(checkpoint)
    if not others:
        return listing
    foreign: list[str] = []
    async for run in client.iter_runs(access_scope="accessible"):
        if run.training_run_id not in listing.own_runs:
            listing.owners[run.training_run_id] = run.model_owner
            foreign.append(run.training_run_id)

    async def list_run(run_id: str) -> None:
        found = [c for c in await client.list_checkpoints(run_id) if c.public]
        listing.checkpoints.extend(found)
        if on_progress is not None:
            on_progress(len(listing.checkpoints))

    for _, error in await apply_concurrently(foreign, list_run, jobs=jobs):
        if error is not None and not isinstance(error, NotFoundError):
            raise error
    return listing
