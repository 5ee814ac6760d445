"""``create_app``: the Starlette application serving a Store over the wire protocol.

It depends on no lifespan events (``httpx.ASGITransport`` sends none): everything it needs
is opened here. Served mode adds background work on top (``serve.py``).
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from logits_cli.errors import ConfigError, LogitsError
from logits_cli.store.store import Store

from . import (
    routes_blobs,
    routes_checkpoints,
    routes_exports,
    routes_sampling,
    routes_service,
    routes_sessions,
    routes_training,
)
from .endpoint import ServerContext
from .futures import FutureRunner
from .guards import PathGuard
from .responses import error_response
from .settings import ServerSettings
from .tokens import Signer, load_or_create_secret


class MountPrefix:
    """Serve under ``root_path`` (§1.2), whether or not a proxy already stripped the prefix.

    Starlette routes on ``path`` minus ``scope["root_path"]``, so requests arriving with or
    without the prefix both reach the routes, and generated URLs read the prefix from the scope.
    """

    def __init__(self, app: ASGIApp, root_path: str) -> None:
        self.app = app
        self.root_path = root_path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.root_path:
            path = scope["path"]
            if path != self.root_path and not path.startswith(self.root_path + "/"):
                path = self.root_path + path
            scope = {**scope, "root_path": self.root_path, "path": path}
        await self.app(scope, receive, send)


async def _render_error(request: Request, exc: Exception) -> Response:
    return error_response(exc)


def create_app(store: Store, settings: ServerSettings) -> Starlette:
    if not 0 < settings.future_poll_hold < 40:
        raise ConfigError("future_poll_hold must be between 0 and 40 seconds")
    secret = (
        settings.signing_secret
        or store.shared_signing_secret()
        or load_or_create_secret(Path(store.root))
    )
    context = ServerContext(
        store=store,
        settings=settings,
        signer=Signer(secret),
        futures=FutureRunner(
            store, inline=settings.inline_futures, workers=settings.future_workers
        ),
    )
    app = Starlette(
        routes=[
            *routes_service.ROUTES,
            *routes_training.ROUTES,
            *routes_checkpoints.ROUTES,
            *routes_blobs.ROUTES,
            # The SDK 0.38 dialect (docs/protocol.md §11).
            *routes_sessions.ROUTES,
            *routes_sampling.ROUTES,
            *routes_exports.ROUTES,
        ],
        middleware=[
            Middleware(PathGuard),  # first: it judges the raw path before anything routes it
            Middleware(MountPrefix, root_path=settings.root_path),
        ],
        # Endpoints render their own errors; these catch what happens before them
        # (unknown route, wrong method) and anything that escapes.
        exception_handlers={
            HTTPException: _render_error,
            LogitsError: _render_error,
            Exception: _render_error,
        },
    )
    app.router.redirect_slashes = False  # §1.2: no redirects between slash variants
    app.state.context = context
    return app


def close_app(app: Starlette) -> None:
    """Let running futures finish and stop the worker threads."""
    context: ServerContext = app.state.context
    context.futures.close()
