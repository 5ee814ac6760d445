"""``open_client``: the one constructor of a ``LogitsClient``, remote or embedded."""

from __future__ import annotations

import httpx

from logits_cli import __version__
from logits_cli.api.answers import AnswerLimits
from logits_cli.api.client import LogitsClient
from logits_cli.api.http import RequestLayer, default_timeout
from logits_cli.api.retry import RetryPolicy
from logits_cli.config import Settings


def identity_headers() -> dict[str, str]:
    """Sent on every API request. A server hides ``external`` rows from requests without
    ``X-Sdk-Version`` (clients that cannot parse them, docs/protocol.md §11.3); we can."""
    return {"X-Sdk-Version": f"logits/{__version__}", "User-Agent": f"logits/{__version__}"}


def open_client(
    settings: Settings,
    *,
    retry_policy: RetryPolicy | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    limits: AnswerLimits | None = None,
) -> LogitsClient:
    """The one constructor: remote (base URL + key) or embedded (ASGI transport over the
    reference server on ``settings.store_dir``, auth off).

    ``retry_policy`` changes the §9 deadline or backoff; ``transport`` replaces the network
    for a remote client (tests use ``httpx.MockTransport``); ``limits`` the deadline, minimum
    rate and size cap of each API answer (``answers.py``).
    """
    policy = retry_policy or RetryPolicy()
    if settings.base_url is not None:
        # A key configured for another host: refused before any request (issue 21 K1).
        settings.check_api_key_destination()
        http = httpx.AsyncClient(
            timeout=default_timeout(), transport=transport, headers=identity_headers()
        )
        layer = RequestLayer(
            http,
            settings.base_url,
            api_key=settings.api_key,
            policy=policy,
            sdk_version=__version__,
            limits=limits,
        )
        blob_mounts = {"all://": transport} if transport is not None else None
        return LogitsClient(settings, layer, embedded=False, blob_mounts=blob_mounts)

    from logits_cli.server.app import close_app, create_app
    from logits_cli.server.settings import EMBEDDED_ORIGIN, ServerSettings
    from logits_cli.store import Store

    store = Store.open(settings.store_dir)
    try:
        app = create_app(store, ServerSettings.embedded())
    except BaseException:
        store.close()
        raise

    def close_backend() -> None:
        try:
            close_app(app)
        finally:
            store.close()

    # App exceptions become 500 answers, as behind a real server, instead of escaping here.
    asgi = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    http = httpx.AsyncClient(timeout=default_timeout(), transport=asgi, headers=identity_headers())
    layer = RequestLayer(
        http,
        EMBEDDED_ORIGIN,
        api_key=None,
        policy=policy,
        sdk_version=__version__,
        limits=limits,
    )
    return LogitsClient(
        settings,
        layer,
        embedded=True,
        blob_mounts={EMBEDDED_ORIGIN: asgi},
        on_close=close_backend,
    )
