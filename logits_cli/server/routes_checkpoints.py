"""Training runs and checkpoints (docs/protocol.md §5.5, §5.6)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from email.utils import formatdate
from urllib.parse import urlsplit

from starlette.responses import Response

from logits_cli import models
from logits_cli.errors import NotFoundError, UnavailableError, UsageError
from logits_cli.protocol_rules import check_access_scope, check_ttl
from logits_cli.store import exports
from logits_cli.store import metadata as checkpoint_meta
from logits_cli.uri import EXTERNAL_KIND, validate_kind, validate_name, validate_run_id

from .endpoint import Call, route
from .responses import json_response
from .tokens import BlobClaim

RUNS_PAGE = (20, 100)  # (default, maximum) of ``limit`` for /training_runs
CHECKPOINTS_PAGE = (100, 1000)  # (default, maximum) of ``limit`` for /checkpoints
_INTEGER = re.compile(r"-?[0-9]{1,18}")  # bounded so it always fits SQLite's 64-bit integers


def _int_query(call: Call, name: str, default: int) -> int:
    text = call.request.query_params.get(name)
    if text is None:
        return default
    if not _INTEGER.fullmatch(text):
        raise UsageError(f"query parameter {name} must be an integer")
    return int(text)


def _page(call: Call, default_limit: int, max_limit: int) -> tuple[int, int]:
    """(limit as applied, offset): limit < 1 and offset < 0 are 400, larger limits clamp."""
    limit = _int_query(call, "limit", default_limit)
    offset = _int_query(call, "offset", 0)
    if limit < 1:
        raise UsageError("limit must be at least 1")
    if offset < 0:
        raise UsageError("offset must not be negative")
    return min(limit, max_limit), offset


def _access_scope(call: Call) -> str:
    return check_access_scope(call.request.query_params.get("access_scope", "owned"))


def _checkpoint_path(call: Call) -> tuple[str, str, str]:
    params = call.request.path_params
    run_id = validate_run_id(params["run_id"])
    return run_id, validate_kind(params["kind"]), validate_name(params["name"])


def _in_scheme(checkpoint: models.Checkpoint, scheme: str) -> models.Checkpoint:
    """The checkpoint with its URI in the configured scheme (§3.5).

    The store keeps the URI a checkpoint was saved under, which is what its archive names
    (§7.1); a server restarted with another ``uri_scheme`` must still answer in its own.
    """
    if checkpoint.tinker_path.startswith(f"{scheme}://"):
        return checkpoint
    _, _, location = checkpoint.tinker_path.partition("://")
    return checkpoint.model_copy(update={"tinker_path": f"{scheme}://{location}"})


def _run_in_scheme(run: models.TrainingRun, scheme: str) -> models.TrainingRun:
    latest = {
        field: _in_scheme(checkpoint, scheme)
        for field, checkpoint in (
            ("last_checkpoint", run.last_checkpoint),
            ("last_sampler_checkpoint", run.last_sampler_checkpoint),
        )
        if checkpoint is not None
    }
    return run.model_copy(update=latest)


async def list_runs(call: Call) -> Response:
    limit, offset = _page(call, *RUNS_PAGE)
    scope = _access_scope(call)
    runs, total = await call.run(
        call.store.list_runs, call.user, access_scope=scope, limit=limit, offset=offset
    )
    runs = [_run_in_scheme(run, call.settings.uri_scheme) for run in runs]
    cursor = models.Cursor(offset=offset, limit=limit, total_count=total)
    return json_response(models.TrainingRunsResponse(training_runs=runs, cursor=cursor))


async def get_run(call: Call) -> Response:
    scope = _access_scope(call)
    run_id = validate_run_id(call.request.path_params["run_id"])
    run = await call.run(call.store.get_run, call.user, run_id, access_scope=scope)
    return json_response(_run_in_scheme(run, call.settings.uri_scheme))


def _shows_external(call: Call) -> bool:
    """SDK 0.24 fails a whole listing on ``checkpoint_type: "external"`` and sends no
    ``x-sdk-version``; 0.38 and our client send one (docs/protocol.md §11.3)."""
    return "x-sdk-version" in call.request.headers


async def list_run_checkpoints(call: Call) -> Response:
    run_id = validate_run_id(call.request.path_params["run_id"])
    checkpoints = await call.run(call.store.list_run_checkpoints, call.user, run_id)
    if not _shows_external(call):
        checkpoints = [c for c in checkpoints if c.kind != EXTERNAL_KIND]
    checkpoints = await call.run(checkpoint_meta.annotate, call.store, checkpoints)
    checkpoints = [_in_scheme(c, call.settings.uri_scheme) for c in checkpoints]
    return json_response(models.CheckpointsListResponse(checkpoints=checkpoints, cursor=None))


async def list_user_checkpoints(call: Call) -> Response:
    limit, offset = _page(call, *CHECKPOINTS_PAGE)
    include_external = _shows_external(call)
    checkpoints, total = await call.run(
        lambda: checkpoint_meta.list_user_checkpoints(
            call.store, call.user, limit=limit, offset=offset, include_external=include_external
        )
    )
    checkpoints = await call.run(checkpoint_meta.annotate, call.store, checkpoints)
    checkpoints = [_in_scheme(c, call.settings.uri_scheme) for c in checkpoints]
    cursor = models.Cursor(offset=offset, limit=limit, total_count=total)
    return json_response(models.CheckpointsListResponse(checkpoints=checkpoints, cursor=cursor))


async def delete_checkpoint(call: Call) -> Response:
    run_id, kind, name = _checkpoint_path(call)
    await call.run(call.store.delete_checkpoint, call.user, run_id, kind, name)
    if kind == EXTERNAL_KIND:  # its files are no longer served; reclaim them now
        await call.run(exports.gc_export_blobs, call.store)
    return Response(status_code=204)


async def publish(call: Call) -> Response:
    """204 whether or not it changed: both SDKs retry a 409 here for five minutes,
    whatever ``x-should-retry`` says (docs/protocol.md §5.6.5, Appendix A, A31)."""
    run_id, kind, name = _checkpoint_path(call)
    public = call.request.method == "POST"
    await call.run(call.store.set_public, call.user, run_id, kind, name, public)
    return Response(status_code=204)


async def delete_run(call: Call) -> Response:
    """Our extension (docs/protocol.md §5.5): the owner deletes a run, with its checkpoints
    when ``with_checkpoints=true``."""
    run_id = validate_run_id(call.request.path_params["run_id"])
    flag = call.request.query_params.get("with_checkpoints", "false")
    if flag not in ("true", "false"):
        raise UsageError("with_checkpoints must be 'true' or 'false'")
    await call.run(call.store.delete_run, call.user, run_id, with_checkpoints=flag == "true")
    return Response(status_code=204)


async def set_ttl(call: Call) -> Response:
    run_id, kind, name = _checkpoint_path(call)
    body = call.json()
    if "ttl_seconds" not in body:
        raise UsageError("invalid field ttl_seconds: field required")
    ttl = body["ttl_seconds"]
    check_ttl(ttl)
    await call.run(call.store.set_ttl, call.user, run_id, kind, name, ttl)
    return Response(status_code=204)


def _public_base(call: Call) -> str:
    """Origin plus mount prefix for the URLs this server hands out (§1.2, §5.6.4)."""
    settings = call.settings
    root_path = (call.request.scope.get("root_path") or settings.root_path).rstrip("/")
    if settings.public_url:
        base = settings.public_url.rstrip("/")
        # A public_url that already names the mount prefix is not extended twice.
        if root_path and urlsplit(base).path.endswith(root_path):
            return base
        return base + root_path
    url = call.request.url
    return f"{url.scheme}://{url.netloc}{root_path}"


async def archive_url(call: Call) -> Response:
    run_id, kind, name = _checkpoint_path(call)
    # The files generation has no archive endpoint; exports download file by file
    # (docs/protocol.md §11, §11.3).
    if getattr(call.settings, "downloads", "both") == "files":
        raise NotFoundError("this deployment has no archive downloads (no such endpoint)")
    if kind == EXTERNAL_KIND:
        raise NotFoundError(
            f"{kind}/{name} has no archive; fetch its files through external_weights_urls"
        )
    checkpoint = await call.run(call.store.get_checkpoint, call.user, run_id, kind, name)
    if checkpoint.sha256 is None:
        raise UnavailableError("the archive of this checkpoint is not ready yet")
    ttl = call.settings.download_url_ttl
    expires = int(time.time()) + ttl
    # With blobs in an object store the bytes come from it, not through this process.
    url = call.store.presigned_url("blobs", checkpoint.sha256, ttl)
    if url is None:
        token = call.context.signer.blob_token(
            BlobClaim(
                run_id=run_id, kind=kind, name=name, sha256=checkpoint.sha256, expires=expires
            )
        )
        url = f"{_public_base(call)}/api/v1/blobs/{token}"
    answer = models.CheckpointArchiveUrlResponse(
        url=url, expires=datetime.fromtimestamp(expires, UTC)
    )
    headers = {"cache-control": "no-store", "expires": formatdate(expires, usegmt=True)}
    if call.request.query_params.get("format") == "json":
        return json_response(answer, headers=headers)
    return json_response(answer, status_code=302, headers={**headers, "location": answer.url})


_CHECKPOINT = "/api/v1/training_runs/{run_id}/checkpoints/{kind}/{name}"
ROUTES = [
    route("/api/v1/training_runs", list_runs, ["GET"]),
    route("/api/v1/training_runs/{run_id}", get_run, ["GET"]),
    route("/api/v1/training_runs/{run_id}", delete_run, ["DELETE"]),
    route("/api/v1/training_runs/{run_id}/checkpoints", list_run_checkpoints, ["GET"]),
    route("/api/v1/checkpoints", list_user_checkpoints, ["GET"]),
    route(_CHECKPOINT, delete_checkpoint, ["DELETE"]),
    route(_CHECKPOINT + "/archive", archive_url, ["GET"]),
    route(_CHECKPOINT + "/publish", publish, ["POST", "DELETE"]),
    route(_CHECKPOINT + "/ttl", set_ttl, ["PUT"]),
]
