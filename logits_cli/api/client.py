"""``LogitsClient``: the async API core every command wraps.

One client talks to a remote server (base URL + key) or to the embedded backend (the reference
server in this process, behind ``httpx.ASGITransport``); both go through the same request
layer (``http.py``: URLs, credentials, retries, error mapping) and the same future polling
(``futures.py``). The client never prints: progress goes through callbacks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from logits_cli import __version__, models
from logits_cli.api.answers import AnswerLimits
from logits_cli.api.blob_direct import BlobClient
from logits_cli.api.download_options import (
    DownloadOptions,
    DownloadResult,
    FileUrls,
    ProgressCallback,
)
from logits_cli.api.futures import wait_for_future
from logits_cli.api.http import (
    BlobTransport,
    RequestLayer,
    default_timeout,
    env_proxies_configured,
)
from logits_cli.api.retry import RetryPolicy
from logits_cli.config import Settings
from logits_cli.errors import (
    AlreadyPrivateError,
    AlreadyPublicError,
    ConflictError,
    NotFoundError,
    UnexpectedResponseError,
    UsageError,
)
from logits_cli.uri import (
    ARCHIVE_KINDS,
    EXTERNAL_KIND,
    KINDS,
    CheckpointRef,
    validate_name,
    validate_run_id,
)

# Called while a future is pending, with the seconds waited so far (for a spinner).
PendingCallback = Callable[[float], None]


class LogitsClient:
    """Open with ``async with open_client(settings) as client``.

    Every method maps failures to the classes of ``errors.py``; none prints. Operations on a
    checkpoint accept an ``@latest`` name and resolve it first.
    """

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

    # -- service --------------------------------------------------------------------------
    async def health(self) -> models.HealthResponse:
        response = await self._layer.request("GET", "healthz", authenticated=False)
        return self._layer.parse(response, models.HealthResponse)

    async def capabilities(self) -> models.ServerCapabilities:
        response = await self._layer.request("GET", "get_server_capabilities")
        return self._layer.parse(response, models.ServerCapabilities)

    # -- runs -----------------------------------------------------------------------------
    async def create_run(
        self,
        base_model: str,
        *,
        rank: int = 32,
        seed: int | None = None,
        train_attn: bool = True,
        train_mlp: bool = True,
        train_unembed: bool = True,
        user_metadata: dict[str, str] | None = None,
        on_pending: PendingCallback | None = None,
        timeout: float | None = None,
    ) -> models.TrainingRun:
        """create_session + create_model future; returns the new run."""
        if rank <= 0:
            raise UsageError(f"LoRA rank must be positive, not {rank}")
        if not (train_attn or train_mlp or train_unembed):
            raise UsageError("at least one of attention, MLP or unembedding must be trained")
        session_id = await self._session()
        model_seq_id = self._next_model_seq_id
        self._next_model_seq_id += 1
        body = models.CreateModelRequest(
            session_id=session_id,
            model_seq_id=model_seq_id,
            base_model=base_model,
            user_metadata=user_metadata,
            lora_config=models.LoraConfig(
                rank=rank,
                seed=seed,
                train_attn=train_attn,
                train_mlp=train_mlp,
                train_unembed=train_unembed,
            ),
        )
        result = await self._submit(
            "create_model",
            body,
            models.CreateModelResult,
            what=f"creation of a {base_model} run",
            on_pending=on_pending,
            timeout=timeout,
        )
        return await self.get_run(result.model_id)

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

    async def get_run(self, run_id: str, *, access_scope: str = "owned") -> models.TrainingRun:
        response = await self._layer.request(
            "GET",
            f"training_runs/{validate_run_id(run_id)}",
            params={"access_scope": _scope(access_scope)},
        )
        return self._layer.parse(response, models.TrainingRun)

    async def iter_runs(
        self, *, access_scope: str = "owned", page_size: int = 100
    ) -> AsyncIterator[models.TrainingRun]:
        """Every run, following the cursor (§5.5)."""
        scope = _scope(access_scope)
        offset = 0
        while True:
            response = await self._layer.request(
                "GET",
                "training_runs",
                params={"limit": page_size, "offset": offset, "access_scope": scope},
            )
            page = self._layer.parse(response, models.TrainingRunsResponse)
            for run in page.training_runs:
                yield run
            offset += len(page.training_runs)
            if _last_page(len(page.training_runs), offset, page.cursor, page_size):
                return

    async def get_info(self, run_id: str) -> models.GetInfoResponse:
        body = models.GetInfoRequest(model_id=validate_run_id(run_id))
        response = await self._layer.request("POST", "get_info", json=body.model_dump())
        return self._layer.parse(response, models.GetInfoResponse)

    # -- checkpoints ----------------------------------------------------------------------
    async def list_checkpoints(self, run_id: str) -> list[models.Checkpoint]:
        """One run's checkpoints, newest first (§5.6.1)."""
        response = await self._layer.request(
            "GET", f"training_runs/{validate_run_id(run_id)}/checkpoints"
        )
        return self._layer.parse(response, models.CheckpointsListResponse).checkpoints

    async def iter_all_checkpoints(
        self, *, page_size: int = 1000
    ) -> AsyncIterator[models.Checkpoint]:
        """The caller's checkpoints across all runs (§5.6.2), following the cursor."""
        offset = 0
        while True:
            response = await self._layer.request(
                "GET", "checkpoints", params={"limit": page_size, "offset": offset}
            )
            page = self._layer.parse(response, models.CheckpointsListResponse)
            for checkpoint in page.checkpoints:
                yield checkpoint
            offset += len(page.checkpoints)
            if _last_page(len(page.checkpoints), offset, page.cursor, page_size):
                return

    async def resolve(self, ref: CheckpointRef) -> CheckpointRef:
        """Replace an ``@latest`` name with the newest checkpoint of that kind in the run;
        NotFoundError if the run has none. Other refs are returned unchanged."""
        if not ref.is_latest:
            return ref
        newest = _newest(await self.list_checkpoints(ref.run_id), ref)
        return ref.with_name(newest.name)

    async def get_checkpoint(self, ref: CheckpointRef) -> models.Checkpoint:
        """One checkpoint (``@latest`` resolved); NotFoundError when absent."""
        checkpoints = await self.list_checkpoints(ref.run_id)
        if ref.is_latest:
            return _newest(checkpoints, ref)
        for checkpoint in checkpoints:
            if checkpoint.checkpoint_id == ref.checkpoint_id:
                return checkpoint
        raise NotFoundError(f"checkpoint {ref} not found")

    async def save(
        self,
        run_id: str,
        name: str,
        *,
        sampler: bool = False,
        ttl_seconds: int | None = None,
        overwrite: bool = False,
        on_pending: PendingCallback | None = None,
        timeout: float | None = None,
    ) -> models.Checkpoint:
        """save_weights (or save_weights_for_sampler), wait for the future, return the new
        checkpoint. ConflictError when the name exists without ``overwrite``."""
        validate_run_id(run_id)
        validate_name(name)
        if ttl_seconds is not None:
            _check_ttl(ttl_seconds)
        kind = "sampler_weights" if sampler else "weights"
        endpoint = "save_weights_for_sampler" if sampler else "save_weights"
        request_model = (
            models.SaveWeightsForSamplerRequest if sampler else models.SaveWeightsRequest
        )
        body = request_model(
            model_id=run_id, path=name, ttl_seconds=ttl_seconds, overwrite=overwrite
        )
        result_model = models.SaveWeightsForSamplerResult if sampler else models.SaveWeightsResult
        await self._submit(
            endpoint,
            body,
            result_model,
            what=f"save of {kind}/{name}",
            on_pending=on_pending,
            timeout=timeout,
        )
        checkpoint_id = f"{kind}/{name}"
        for checkpoint in await self.list_checkpoints(run_id):
            if checkpoint.checkpoint_id == checkpoint_id:
                return checkpoint
        raise NotFoundError(
            f"checkpoint {checkpoint_id} was saved but run {run_id} no longer lists it"
        )

    async def load(
        self,
        run_id: str,
        ref: CheckpointRef,
        *,
        with_optimizer: bool = False,
        on_pending: PendingCallback | None = None,
        timeout: float | None = None,
    ) -> str:
        """load_weights future; returns the loaded path as the server reports it."""
        validate_run_id(run_id)
        if ref.kind == EXTERNAL_KIND:
            raise UsageError(
                f"cannot load {ref}: external_weights checkpoints are adapter-only exports "
                "for download; load the weights/ checkpoint they were exported from"
            )
        source = await self._target(ref, "load")
        if with_optimizer and source.kind != "weights":
            raise UsageError(
                f"{source} holds no optimizer state; only weights checkpoints can be loaded "
                "with the optimizer"
            )
        body = models.LoadWeightsRequest(
            model_id=run_id, path=str(source), optimizer=with_optimizer
        )
        result = await self._submit(
            "load_weights",
            body,
            models.LoadWeightsResult,
            what=f"load of {source}",
            on_pending=on_pending,
            timeout=timeout,
        )
        return result.path or str(source)

    async def weights_info(self, ref: CheckpointRef) -> models.WeightsInfoResponse:
        target = await self._target(ref, "inspect")
        body = models.WeightsInfoRequest(tinker_path=str(target))
        response = await self._layer.request("POST", "weights_info", json=body.model_dump())
        return self._layer.parse(response, models.WeightsInfoResponse)

    async def delete(self, ref: CheckpointRef) -> None:
        target = await self._target(ref, "delete")
        await self._layer.request("DELETE", _checkpoint_endpoint(target))

    async def publish(self, ref: CheckpointRef) -> bool:
        """True if it changed, False if it was already public."""
        return await self._set_visibility(ref, "POST", AlreadyPrivateError)

    async def unpublish(self, ref: CheckpointRef) -> bool:
        """True if it changed, False if it was already private."""
        return await self._set_visibility(ref, "DELETE", AlreadyPublicError)

    async def _set_visibility(
        self, ref: CheckpointRef, method: str, contradiction: type[ConflictError]
    ) -> bool:
        target = await self._target(ref, "publish" if method == "POST" else "unpublish")
        try:
            await self._layer.request(method, f"{_checkpoint_endpoint(target)}/publish")
        except ConflictError as exc:
            # A 409 here means "already in that state"; deployments may omit the code.
            if isinstance(exc, contradiction):
                raise
            return False
        return True

    async def set_ttl(self, ref: CheckpointRef, ttl_seconds: int | None) -> None:
        if ttl_seconds is not None:
            _check_ttl(ttl_seconds)
        target = await self._target(ref, "set the TTL of")
        body = models.TtlRequest(ttl_seconds=ttl_seconds)
        await self._layer.request(
            "PUT", f"{_checkpoint_endpoint(target)}/ttl", json=body.model_dump()
        )

    async def archive_url(self, ref: CheckpointRef) -> models.CheckpointArchiveUrlResponse:
        """Signed URL and expiry (302 or JSON form, §5.6.4)."""
        target = await self._target(ref, "download", kinds=ARCHIVE_KINDS)
        response = await self._layer.request(
            "GET",
            f"{_checkpoint_endpoint(target)}/archive",
            params={"format": "json"},
            accept=REDIRECT_STATUSES,
        )
        if response.status_code in REDIRECT_STATUSES:
            location = response.headers.get("location", "").strip()
            if not location:
                raise UnexpectedResponseError(
                    f"the archive answer for {target} is a redirect without a Location",
                    status=response.status_code,
                )
            return models.CheckpointArchiveUrlResponse(
                url=str(response.request.url.join(location)),
                expires=_expires_header(response.headers.get("expires")),
            )
        answer = self._layer.parse(response, models.CheckpointArchiveUrlResponse)
        return answer.model_copy(update={"url": str(response.request.url.join(answer.url))})

    async def external_weights_urls(self, ref: CheckpointRef) -> FileUrls:
        """The per-file signed URLs of an ``external_weights/`` checkpoint (§11.3), joined
        against the request URL like the archive URL."""
        target = await self._target(ref, "download", kinds=(EXTERNAL_KIND,))
        response = await self._layer.request(
            "GET", f"{_checkpoint_endpoint(target)}/external_weights_urls"
        )
        answer = self._layer.parse(response, models.ExternalWeightsUrlsResponse)
        base = response.request.url
        return FileUrls(
            urls={path: str(base.join(url)) for path, url in answer.urls.items()},
            expires=answer.expires,
        )

    async def create_run_from(self, ref: CheckpointRef, *, timeout: float | None = None) -> str:
        """Create-via-load (§11.2): a new run in this client's session holding ``ref``'s
        weights (no optimizer state); returns its run id."""
        source = await self._target(ref, "export")
        session_id = await self._session()
        model_seq_id = self._next_model_seq_id
        self._next_model_seq_id += 1
        body = models.CreateViaLoadRequest(
            session_id=session_id, model_seq_id=model_seq_id, path=str(source)
        )
        result = await self._submit(
            "load_weights",
            body,
            models.LoadWeightsResult,
            what=f"creation of a run from {source}",
            on_pending=None,
            timeout=timeout,
        )
        if not result.model_id:
            raise UnexpectedResponseError(
                f"the server created a run from {source} but did not say which", status=200
            )
        return result.model_id

    async def save_external(
        self, run_id: str, name: str, *, ttl_seconds: int, timeout: float | None = None
    ) -> CheckpointRef:
        """``save_weights_external`` (§11.3); returns the export's reference."""
        body = models.SaveWeightsExternalRequest(
            model_id=validate_run_id(run_id), path=validate_name(name), ttl_seconds=ttl_seconds
        )
        result = await self._submit(
            "save_weights_external",
            body,
            models.SaveWeightsExternalResult,
            what=f"export of {run_id} as {name}",
            on_pending=None,
            timeout=timeout,
        )
        return CheckpointRef.parse(result.path)

    async def finish_session(self) -> None:
        """End this client's session (§11.1), if it made one; later calls make a new one."""
        async with self._session_lock:
            session_id, self._session_id = self._session_id, None
        if session_id is not None:
            await self._layer.request(
                "POST", f"sessions/{session_id}/finish", json={"reason": {"type": "success"}}
            )

    async def _target(
        self, ref: CheckpointRef, operation: str, *, kinds: tuple[str, ...] = KINDS
    ) -> CheckpointRef:
        """``ref`` with ``@latest`` resolved, refusing kinds this client cannot act on."""
        _require_known_kind(ref, operation, kinds)
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

    # -- transfer -------------------------------------------------------------------------
    @property
    def blob_http(self) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` for signed blob URLs: no credential headers,
        ``Accept-Encoding: identity``, follows at most 5 redirects, and in embedded mode
        routes through the same in-process ASGI transport (docs/protocol.md §1.4, §6.3).

        Other origins go through ``BlobTransport``, which reads the socket in large blocks
        (the transfer engine is CPU-bound on fast links otherwise), and the transfer engine
        reads their bodies in threads (``blob_direct.py``), except when an environment proxy
        is configured: httpx's own transport then routes everything through it."""
        if self._blob_http is None:
            proxied = env_proxies_configured()
            self._blob_http = BlobClient(
                direct=not proxied,
                headers={"Accept-Encoding": "identity"},
                follow_redirects=True,
                max_redirects=MAX_BLOB_REDIRECTS,
                timeout=default_timeout(),
                transport=None if proxied else BlobTransport(),
                mounts=self._blob_mounts,
            )
        return self._blob_http

    async def download(
        self,
        ref: CheckpointRef,
        dest_dir: Path,
        *,
        options: DownloadOptions | None = None,
        progress: ProgressCallback | None = None,
        notice: Callable[[str], None] | None = None,
    ) -> DownloadResult:
        """Fetch, verify and install one checkpoint into ``dest_dir/NAME``
        (docs/ARCHITECTURE.md §3), on either generation of the service: ``files_generation``
        picks the archive path (``transfer.archive``) or the per-file one (``transfer.files``).
        ``notice`` receives one-line messages for the user (an export being made)."""
        from logits_cli.api.files_generation import download

        _require_known_kind(ref, "download", KINDS)
        return await download(self, ref, dest_dir, options or DownloadOptions(), progress, notice)

    async def aclose(self) -> None:
        try:
            if self._blob_http is not None:
                await self._blob_http.aclose()
            await self._layer.http.aclose()
        finally:
            if self._on_close is not None:
                self._on_close()
                self._on_close = None

    async def __aenter__(self) -> LogitsClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


REDIRECT_STATUSES = (301, 302, 303, 307, 308)
MAX_BLOB_REDIRECTS = 5
ARCHIVE_URL_DEFAULT_LIFETIME = timedelta(minutes=15)

R = TypeVar("R", bound=BaseModel)


def _scope(access_scope: str) -> str:
    if access_scope not in ("owned", "accessible"):
        raise UsageError(f"access scope must be 'owned' or 'accessible', not {access_scope!r}")
    return access_scope


def _check_ttl(ttl_seconds: int) -> None:
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds <= 0:
        raise UsageError(f"TTL must be a positive number of seconds, not {ttl_seconds!r}")


def _last_page(count: int, offset: int, cursor: models.Cursor | None, page_size: int) -> bool:
    """Stop at ``total_count`` or on a short page (§5.5, §5.6.2)."""
    if count == 0 or cursor is None:
        return True
    if offset >= cursor.total_count:
        return True
    return cursor.limit > 0 and count < min(cursor.limit, page_size)


def _newest(checkpoints: list[models.Checkpoint], ref: CheckpointRef) -> models.Checkpoint:
    """The newest of ``ref.kind`` by ``time``; the listing's order breaks ties."""
    of_kind = [c for c in checkpoints if c.kind == ref.kind]
    if not of_kind:
        raise NotFoundError(f"no {ref.kind} checkpoints in run {ref.run_id}")
    return max(of_kind, key=lambda c: c.time)


def _require_known_kind(ref: CheckpointRef, operation: str, kinds: tuple[str, ...]) -> None:
    """Kinds a deployment lists but this operation cannot act on are refused before any
    request; unknown kinds parse and list, but nothing else (docs/protocol.md §11)."""
    if ref.kind not in kinds:
        raise UsageError(
            f"cannot {operation} {ref}: checkpoints of kind {ref.kind!r} are not supported "
            f"here; only {', '.join(kinds)} are"
        )


def _identity_headers() -> dict[str, str]:
    """Sent on every API request. A server hides ``external`` rows from requests without
    ``X-Sdk-Version`` (clients that cannot parse them, docs/protocol.md §11.3); we can."""
    return {"X-Sdk-Version": f"logits/{__version__}", "User-Agent": f"logits/{__version__}"}


def _checkpoint_endpoint(ref: CheckpointRef) -> str:
    return f"training_runs/{validate_run_id(ref.run_id)}/checkpoints/{ref.kind}/{ref.name}"


def _expires_header(value: str | None) -> datetime:
    """The ``Expires`` of a 302 archive answer; 15 minutes from now when absent or unreadable."""
    if value:
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.astimezone(UTC)
    return datetime.now(UTC) + ARCHIVE_URL_DEFAULT_LIFETIME


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
        http = httpx.AsyncClient(
            timeout=default_timeout(), transport=transport, headers=_identity_headers()
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
    http = httpx.AsyncClient(timeout=default_timeout(), transport=asgi, headers=_identity_headers())
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
