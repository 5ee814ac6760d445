"""What every command shares: the root's connection flags, settings, and one API session."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import typer

from logits_cli import config
from logits_cli.errors import UsageError

if TYPE_CHECKING:
    from logits_cli.api.client import LogitsClient

T = TypeVar("T")


@dataclass(frozen=True)
class RootOptions:
    """The root callback's flags, kept on ``ctx.obj`` for every subcommand."""

    base_url: str | None = None
    profile: str | None = None
    home: str | None = None
    retry_for: float | None = None  # seconds; None keeps the API's default deadline


def settings_for(
    ctx: typer.Context, *, run: str | None = None, home: str | None = None
) -> config.Settings:
    """Resolve settings from the root flags plus a command's own ``--run``/``--home``.

    An empty ``--run`` is refused rather than read as "not given": ``--run "$RUN"`` with RUN
    unset must not fall back to ``$LOGITS_RUN`` and act on another run.
    """
    if run is not None and not run.strip():
        raise UsageError("the run id is empty")
    root = ctx.obj if isinstance(ctx.obj, RootOptions) else RootOptions()
    return config.resolve(
        base_url=root.base_url,
        profile=root.profile,
        home=home if home is not None else root.home,
        run=run,
    )


def require_run(settings: config.Settings) -> str:
    if settings.run is None:
        raise UsageError(
            "no run given; pass --run RUN or set LOGITS_RUN",
            hint="`logits runs ls` lists your runs; `logits runs create --base-model M` makes one",
        )
    from logits_cli.uri import validate_run_id

    return validate_run_id(settings.run)


def call_api(
    ctx: typer.Context, settings: config.Settings, work: Callable[[LogitsClient], Awaitable[T]]
) -> T:
    """Open one client, run ``work`` with it inside one event loop, close it."""
    import asyncio

    from logits_cli.api import open_client
    from logits_cli.api.retry import RetryPolicy

    root = ctx.obj if isinstance(ctx.obj, RootOptions) else RootOptions()
    policy = RetryPolicy(deadline_s=root.retry_for) if root.retry_for is not None else None

    async def session() -> T:
        async with open_client(settings, retry_policy=policy) as client:
            return await work(client)

    return asyncio.run(session())
