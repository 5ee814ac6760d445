"""Exports, per-file URLs and copies (docs/protocol.md §11.3, §11.4)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response

from logits_cli import models
from logits_cli.errors import NotFoundError, UsageError
from logits_cli.protocol_rules import check_ttl
from logits_cli.store import copies, exports, sessions
from logits_cli.store import metadata as checkpoint_meta
from logits_cli.uri import EXTERNAL_KIND, CheckpointRef, validate_name, validate_run_id

from .endpoint import Call, route
from .futures import request_digest
from .responses import json_response
from .routes_checkpoints import _public_base
from .tokens import BlobClaim


def files_enabled(call: Call) -> None:
    """``downloads = archive`` serves no exports: a deployment of the archive generation."""
    if getattr(call.settings, "downloads", "both") == "archive":
        raise NotFoundError("this deployment has no external_weights exports (no such endpoint)")


def _ttl(body: dict[str, Any]) -> int | None:
    ttl = body.get("ttl_seconds")
    check_ttl(ttl)
    return ttl


async def save_weights_external(call: Call) -> Response:
    files_enabled(call)
    body = call.json()
    model_id = body.get("model_id")
    name = body.get("path")
    if not isinstance(model_id, str):
        raise UsageError("invalid field model_id: field required")
    if not isinstance(name, str):
        raise UsageError("invalid field path: field required")
    validate_name(name)
    ttl = _ttl(body)
    seq_id = body.get("seq_id")
    if seq_id is not None and type(seq_id) is not int:
        raise UsageError("invalid field seq_id: expected an integer")
    recipients = body.get("age_encryption_recipients")
    if recipients is not None:
        if not isinstance(recipients, list):
            raise UsageError("invalid field age_encryption_recipients: expected a list")
        exports.age_recipients(recipients)  # a bad key is a malformed request (400)
    await call.run(call.store.get_run, call.user, model_id, access_scope="owned")
    user, store, scheme = call.user, call.store, call.settings.uri_scheme

    def job() -> dict[str, Any]:
        checkpoint = exports.save_external(
            store,
            user,
            model_id,
            name=name,
            ttl_seconds=ttl,
            recipients=recipients,
            uri_scheme=scheme,
        )
        result = models.SaveWeightsExternalResult(
            path=checkpoint.tinker_path, size_bytes=checkpoint.size_bytes
        )
        return result.model_dump(mode="json")

    request_id = await call.context.futures.submit(
        call.user,
        operation="save_weights_external",
        model_id=model_id,
        job=job,
        seq_id=seq_id,
        body_sha256=request_digest(body),
    )
    return json_response(models.FutureHandle(request_id=request_id, model_id=model_id))


async def external_weights_urls(call: Call) -> Response:
    files_enabled(call)
    params = call.request.path_params
    run_id = validate_run_id(params["run_id"])
    name = validate_name(params["name"])
    files = await call.run(lambda: exports.export_files(call.store, call.user, run_id, name))
    expires = int(time.time()) + call.settings.download_url_ttl
    base = _public_base(call)
    urls = {}
    for file in files:
        presigned = call.store.presigned_url("exports", file.sha256, call.settings.download_url_ttl)
        if presigned is not None:  # blobs in an object store: fetched from it directly
            urls[file.path] = presigned
            continue
        token = call.context.signer.blob_token(
            BlobClaim(
                run_id=run_id,
                kind=EXTERNAL_KIND,
                name=name,
                sha256=file.sha256,
                expires=expires,
                file=file.path,
            )
        )
        urls[file.path] = f"{base}/api/v1/blobs/{token}"
    answer = models.ExternalWeightsUrlsResponse(
        urls=urls, expires=datetime.fromtimestamp(expires, UTC)
    )
    return json_response(answer, headers={"cache-control": "no-store"})


def _destination(call: Call, body: dict[str, Any], source_base: tuple[Any, ...]) -> str:
    """The caller's run that receives the copy, created (like create-via-load) if needed."""
    store, user = call.store, call.user
    session_id = body.get("session_id")
    seq = body.get("model_seq_id")
    if session_id is None:
        # SDK 0.38 sends no project when TINKER_PROJECT_ID is unset: the caller's default.
        project = body.get("destination_project_id") or sessions.DEFAULT_PROJECT
        if not isinstance(project, str):
            raise UsageError("invalid field destination_project_id: expected a string")
        # A session of its own for the copy, in the destination project.
        session_id = store.create_session(
            user,
            tags=["copy_weights"],
            user_metadata=None,
            sdk_version="server",
            project_id=project,
        )
        seq = 0
    elif not isinstance(session_id, str) or type(seq) is not int or seq < 0:
        raise UsageError("session_id needs model_seq_id, an integer >= 0")
    run_id = f"{session_id}:train:{seq}"
    try:
        store.get_run(user, run_id, access_scope="owned")
    except NotFoundError:
        sessions.require_open_session(store, user, session_id)
        _, lora, base_model, optimizer = source_base
        store.create_run(
            user,
            session_id=session_id,
            model_seq_id=seq,
            base_model=base_model,
            lora_config=lora,
            user_metadata=None,
        )
        checkpoint_meta.set_run_optimizer(store, run_id, optimizer)
    return run_id


async def copy_weights(call: Call) -> Response:
    body = call.json()
    source = body.get("source_path")
    if not isinstance(source, str):
        raise UsageError("invalid field source_path: field required")
    source = str(CheckpointRef.parse(source))
    ttl = _ttl(body)
    store, user, scheme = call.store, call.user, call.settings.uri_scheme

    def work() -> str:
        base = checkpoint_meta.source_config(store, user, source)
        destination = _destination(call, body, base)
        return copies.copy_checkpoint(
            store,
            user,
            source=source,
            destination_run=destination,
            ttl_seconds=ttl,
            uri_scheme=scheme,
        )

    path = await call.run(work)
    return json_response(models.CopyWeightsResponse(tinker_path=path))


_EXPORT = "/api/v1/training_runs/{run_id}/checkpoints/external_weights/{name}"
ROUTES = [
    route("/api/v1/save_weights_external", save_weights_external, ["POST"]),
    route(_EXPORT + "/external_weights_urls", external_weights_urls, ["GET"]),
    route("/api/v1/copy_weights", copy_weights, ["POST"]),
]
