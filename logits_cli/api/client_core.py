"""The part of ``LogitsClient`` every operation builds on: the request layer, the session
models are created in, ``@latest`` resolution, future submission, the blob client and
closing. The operations themselves are in ``client.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel

from logits_cli import __version__, models
from logits_cli.api.blob_direct import BlobClient, env_proxies_configured
from logits_cli.api.futures import wait_for_future
from logits_cli.api.http import RequestLayer, default_timeout
from logits_cli.api.request_checks import MAX_BLOB_REDIRECTS, newest, require_known_kind
from logits_cli.api.retry import RetryPolicy
from logits_cli.config import Settings
from logits_cli.uri import KINDS, CheckpointRef, validate_name, validate_run_id

# Called while a future is pending, with the seconds waited so far (for a spinner).
PendingCallback = Callable[[float], None]

R = TypeVar("R", bound=BaseModel)


class ClientCore:
    """State and plumbing of one client; see ``client.LogitsClient``."""

    settings: Settings
    embedded: bool

    def __init__(
        self,
        settings: Settings,
        layer: RequestLayer,
        *,
        embedded: bool,
        blob_mounts: dict[str, httpx.AsyncBaseTransport] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.embedded = embedded
        self._layer = layer
        self._blob_mounts = blob_mounts
        self._blob_http: httpx.AsyncClient | None = None
        self._on_close = on_close
        self._session_id: str | None = None
        self._session_lock = asyncio.Lock()
        self._next_model_seq_id = 0

    @property
    def retry_policy(self) -> RetryPolicy:
        """The §9 policy of this client (deadline, backoff); the transfer engine reuses it."""
        return self._layer.policy

    async def _session(self) -> str:
        """The session this client creates models in: made once, on first need (§5.1)."""
        async with self._session_lock:
            if self._session_id is None:
                body = models.CreateSessionRequest(tags=[], sdk_version=__version__)
                response = await self._layer.request(
                    "POST", "create_session", json=body.model_dump(exclude_none=True)
                )
                self._session_id = self._layer.parse(
                    response, models.CreateSessionResponse
                ).session_id
            return self._session_id

    async def list_checkpoints(self, run_id: str) -> list[models.Checkpoint]:
        """One run's checkpoints, newest first (§5.6.1)."""
        response = await self._layer.request(
            "GET", f"training_runs/{validate_run_id(run_id)}/checkpoints"
        )
        return self._layer.parse(response, models.CheckpointsListResponse).checkpoints

    async def resolve(self, ref: CheckpointRef) -> CheckpointRef:
        """Replace an ``@latest`` name with the newest checkpoint of that kind in the run;
        NotFoundError if the run has none. Other refs are returned unchanged."""
        if not ref.is_latest:
            return ref
        found = newest(await self.list_checkpoints(ref.run_id), ref)
        return ref.with_name(found.name)

    async def _target(
        self, ref: CheckpointRef, operation: str, *, kinds: tuple[str, ...] = KINDS
    ) -> CheckpointRef:
        """``ref`` with ``@latest`` resolved, refusing kinds this client cannot act on."""
        require_known_kind(ref, operation, kinds)
        target = await self.resolve(ref)
        # Refs built by hand skip the parser; their parts become URL path segments.
        validate_run_id(target.run_id)
        validate_name(target.name)
        return target

    async def _submit(
        self,
        endpoint: str,
        body: models.RequestModel,
        result_model: type[R],
        *,
        what: str,
        on_pending: PendingCallback | None,
        timeout: float | None,
    ) -> R:
        """POST a future endpoint and wait for its result."""
        response = await self._layer.request(
            "POST", endpoint, json=body.model_dump(exclude_none=True)
        )
        handle = self._layer.parse(response, models.FutureHandle)
        return await wait_for_future(
            self._layer, handle, result_model, what=what, on_pending=on_pending, timeout=timeout
        )

    @property
    def blob_http(self) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` for signed blob URLs: no credential headers,
        ``Accept-Encoding: identity``, follows at most 5 redirects, and in embedded mode
        routes through the same in-process ASGI transport (docs/protocol.md §1.4, §6.3).

        The transfer engine reads the bodies of other origins in threads (``blob_direct.py``),
        except when an environment proxy is configured: httpx's own transport then routes
        everything through it (``transfer/blob_readers.py``)."""
        if self._blob_http is None:
            self._blob_http = BlobClient(
                direct=not env_proxies_configured(),
                headers={"Accept-Encoding": "identity"},
                follow_redirects=True,
                max_redirects=MAX_BLOB_REDIRECTS,
                timeout=default_timeout(),
                mounts=self._blob_mounts,
            )
        return self._blob_http

    async def aclose(self) -> None:
        try:
            if self._blob_http is not None:
                await self._blob_http.aclose()
            await self._layer.http.aclose()
        finally:
            if self._on_close is not None:
                self._on_close()
                self._on_close = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
