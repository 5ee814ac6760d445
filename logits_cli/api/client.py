"""``LogitsClient``: the async API core every command wraps.

One client talks to a remote server (base URL + key) or to the embedded backend (the reference
server in this process, behind ``httpx.ASGITransport``); both go through the same request
layer (``http.py``: URLs, credentials, retries, error mapping) and the same future polling
(``futures.py``). ``connect.open_client`` makes one; ``client_core.py`` holds its plumbing.
The client never prints: progress goes through callbacks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

from logits_cli import models
from logits_cli.api.client_core import PendingCallback
from logits_cli.api.client_runs import RunRequests
from logits_cli.api.download_options import (
    DownloadOptions,
    DownloadResult,
    FileUrls,
    ProgressCallback,
)
from logits_cli.api.request_checks import (
    REDIRECT_STATUSES,
    check_ttl,
    checkpoint_endpoint,
    expires_header,
    last_page,
    newest,
    require_known_kind,
)
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

__all__ = ["LogitsClient", "PendingCallback"]


class LogitsClient(RunRequests):
    """Open with ``async with open_client(settings) as client``.

    Every method maps failures to the classes of ``errors.py``; none prints. Operations on a
    checkpoint accept an ``@latest`` name and resolve it first.
    """

    # -- service --------------------------------------------------------------------------
    async def health(self) -> models.HealthResponse:
        response = await self._layer.request("GET", "healthz", authenticated=False)
        return self._layer.parse(response, models.HealthResponse)

    async def capabilities(self) -> models.ServerCapabilities:
        response = await self._layer.request("GET", "get_server_capabilities")
        return self._layer.parse(response, models.ServerCapabilities)

    # -- checkpoints ----------------------------------------------------------------------
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
            if last_page(len(page.checkpoints), offset, page.cursor, page_size):
                return

    async def get_checkpoint(self, ref: CheckpointRef) -> models.Checkpoint:
        """One checkpoint (``@latest`` resolved); NotFoundError when absent."""
        checkpoints = await self.list_checkpoints(ref.run_id)
        if ref.is_latest:
            return newest(checkpoints, ref)
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
            check_ttl(ttl_seconds)
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
        await self._layer.request("DELETE", checkpoint_endpoint(target))

    async def publish(self, ref: CheckpointRef) -> bool:
        """True if it changed, False if it was already public."""
        return await self._set_visibility(ref, public=True)

    async def unpublish(self, ref: CheckpointRef) -> bool:
        """True if it changed, False if it was already private."""
        return await self._set_visibility(ref, public=False)

    async def _set_visibility(self, ref: CheckpointRef, *, public: bool) -> bool:
        """Whether it changed, judged by the state listed before the request: our server
        answers 204 either way (docs/protocol.md §5.6.5, A31), older servers 409 when it is
        already so (a 409 of the other state is a contradiction, raised)."""
        target = await self._target(ref, "publish" if public else "unpublish")
        before = await self.get_checkpoint(target)
        method = "POST" if public else "DELETE"
        try:
            await self._layer.request(method, f"{checkpoint_endpoint(target)}/publish")
        except ConflictError as exc:
            if isinstance(exc, AlreadyPrivateError if public else AlreadyPublicError):
                raise
            return False
        return before.public != public

    async def set_ttl(self, ref: CheckpointRef, ttl_seconds: int | None) -> None:
        if ttl_seconds is not None:
            check_ttl(ttl_seconds)
        target = await self._target(ref, "set the TTL of")
        body = models.TtlRequest(ttl_seconds=ttl_seconds)
        await self._layer.request(
            "PUT", f"{checkpoint_endpoint(target)}/ttl", json=body.model_dump()
        )

    async def archive_url(self, ref: CheckpointRef) -> models.CheckpointArchiveUrlResponse:
        """Signed URL and expiry (302 or JSON form, §5.6.4)."""
        target = await self._target(ref, "download", kinds=ARCHIVE_KINDS)
        response = await self._layer.request(
            "GET",
            f"{checkpoint_endpoint(target)}/archive",
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
                expires=expires_header(response.headers.get("expires")),
            )
        answer = self._layer.parse(response, models.CheckpointArchiveUrlResponse)
        return answer.model_copy(update={"url": str(response.request.url.join(answer.url))})

    async def external_weights_urls(self, ref: CheckpointRef) -> FileUrls:
        """The per-file signed URLs of an ``external_weights/`` checkpoint (§11.3), joined
        against the request URL like the archive URL."""
        target = await self._target(ref, "download", kinds=(EXTERNAL_KIND,))
        response = await self._layer.request(
            "GET", f"{checkpoint_endpoint(target)}/external_weights_urls"
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

    async def session_id(self) -> str:
        """This client's session (§11.1), created on first need; the run of the next
        ``create_run_from`` is made in it."""
        return await self._session()

    async def finish_session(self, session_id: str | None = None) -> None:
        """End this client's session (§11.1), if it made one (later calls make a new one),
        or ``session_id``, one an earlier process of ours made and could not finish."""
        if session_id is None or session_id == self._session_id:
            async with self._session_lock:
                session_id, self._session_id = self._session_id, None
        if session_id is not None:
            await self._layer.request(
                "POST", f"sessions/{session_id}/finish", json={"reason": {"type": "success"}}
            )

    # -- transfer -------------------------------------------------------------------------
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

        require_known_kind(ref, "download", KINDS)
        return await download(self, ref, dest_dir, options or DownloadOptions(), progress, notice)
