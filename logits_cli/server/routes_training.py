"""Models, weights and futures (docs/protocol.md §5.2–§5.4).

A future endpoint validates the request and checks that the session or run is the caller's
(anything wrong there is an HTTP 4xx and creates no future); every later failure is reported
inside the future.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.responses import Response

from logits_cli import models
from logits_cli.errors import ConflictError, LogitsError, UsageError
from logits_cli.protocol_rules import check_ttl
from logits_cli.store import metadata as checkpoint_meta
from logits_cli.store import sessions
from logits_cli.store.store import Store
from logits_cli.uri import CheckpointRef, validate_name, validate_run_id, validate_segment

from .endpoint import Call, parse_fields, route
from .futures import Job, request_digest
from .responses import json_response


async def _submit(
    call: Call,
    *,
    operation: str,
    model_id: str,
    job: Job,
    body: dict[str, Any],
    seq_id: int | None = None,
    resumable: dict[str, Any] | None = None,
) -> Response:
    request_id = await call.context.futures.submit(
        call.user,
        operation=operation,
        model_id=model_id,
        job=job,
        seq_id=seq_id,
        body_sha256=request_digest(body),
        resumable=resumable,
    )
    return json_response(models.FutureHandle(request_id=request_id, model_id=model_id))


async def _require_own_run(call: Call, model_id: str) -> None:
    """400 for an id that is no run id (``.``, ``..``, a ``/``), 404 for a run that is
    unknown or not the caller's: both before any future exists."""
    validate_run_id(model_id)
    await call.run(call.store.get_run, call.user, model_id, access_scope="owned")


def _string_metadata(body: dict[str, Any]) -> dict[str, str] | None:
    """``user_metadata`` of a save (SDK 0.38): an object of strings, else 400."""
    metadata = body.get("user_metadata")
    if metadata is not None and (
        not isinstance(metadata, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise UsageError("invalid field user_metadata: expected an object of strings")
    return metadata


def _ttl(ttl_seconds: int | None) -> int | None:
    """A bad TTL is a malformed request (400), not a failed future (§5.2, §5.4)."""
    check_ttl(ttl_seconds)
    return ttl_seconds


async def create_model(call: Call) -> Response:
    body = call.json()
    lora_data = body.get("lora_config")
    if lora_data is not None and not isinstance(lora_data, dict):
        raise UsageError("invalid field lora_config: input should be an object")
    request = call.parse(models.CreateModelRequest, {**body, "lora_config": None})
    lora = parse_fields(models.LoraConfig, lora_data or {}, location="lora_config")
    if lora.rank <= 0:
        raise UsageError("lora_config.rank must be a positive integer")
    if lora.seed is not None and lora.seed < 0:
        raise UsageError("lora_config.seed must be a non-negative integer")
    if request.model_seq_id < 0:
        raise UsageError("model_seq_id must be a non-negative integer")
    validate_segment(request.session_id, "session id")
    if not (lora.train_attn or lora.train_mlp or lora.train_unembed):
        raise UsageError("at least one of train_attn, train_mlp, train_unembed must be true")
    optimizer = checkpoint_meta.optimizer_config(body.get("optimizer_config"))
    # The session must be the caller's and not finished (410, docs/protocol.md §11.1); a
    # heartbeat checks exactly that, and creating a model is session activity anyway.
    await call.run(sessions.heartbeat, call.store, call.user, request.session_id)
    user, store = call.user, call.store
    model_id = f"{request.session_id}:train:{request.model_seq_id}"

    def job() -> dict[str, Any]:
        run_id = store.create_run(
            user,
            session_id=request.session_id,
            model_seq_id=request.model_seq_id,
            base_model=request.base_model,
            lora_config=lora,
            user_metadata=request.user_metadata,
        )
        checkpoint_meta.set_run_optimizer(store, run_id, optimizer or {"type": "adamw"})
        return models.CreateModelResult(model_id=run_id).model_dump(mode="json")

    return await _submit(call, operation="create_model", model_id=model_id, job=job, body=body)


async def get_info(call: Call) -> Response:
    request = call.parse(models.GetInfoRequest)
    validate_run_id(request.model_id)
    info = await call.run(call.store.get_info, call.user, request.model_id)
    optimizer = await call.run(checkpoint_meta.run_optimizer, call.store, request.model_id)
    return json_response(info.model_copy(update={"optimizer_config": optimizer}))


def _save_spec(
    call: Call,
    model_id: str,
    kind: str,
    name: str,
    ttl: int | None,
    overwrite: bool,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A save as JSON (futures.job): any server process can run it again from the run's
    live state if the one that took it dies (``resumable_job``)."""
    return {
        "op": "save",
        "user": call.user,
        "model_id": model_id,
        "kind": kind,
        "name": name,
        "ttl": ttl,
        "overwrite": overwrite,
        "metadata": metadata,
        "uri_scheme": call.settings.uri_scheme,
        "requested_at": time.time(),
    }


def resumable_job(store: Store, spec: dict[str, Any], *, resumed: bool = False) -> Job:
    """The job a ``_save_spec`` names; ``resumed`` when another process took it over
    (FutureRunner.start_takeover)."""
    if spec.get("op") != "save":
        raise LogitsError(f"cannot resume a job of kind {spec.get('op')!r}")
    fields = {key: value for key, value in spec.items() if key not in ("op", "requested_at")}
    job = _save_job(store, **fields)
    if not resumed:
        return job

    def resumed_job() -> dict[str, Any]:
        try:
            return job()
        except ConflictError:
            # The dead process may have committed the checkpoint and died before recording
            # the future's outcome: a checkpoint of that name made since the request is it.
            saved = store.get_checkpoint(
                fields["user"], fields["model_id"], spec["kind"], spec["name"]
            )
            if saved.time.timestamp() < spec.get("requested_at", float("inf")):
                raise
            return _save_result(spec["kind"], saved.tinker_path)

    return resumed_job


def _save_job(
    store: Store,
    *,
    user: str,
    model_id: str,
    kind: str,
    name: str,
    ttl: int | None,
    overwrite: bool,
    metadata: dict[str, str] | None,
    uri_scheme: str,
) -> Job:
    scheme = uri_scheme

    def job() -> dict[str, Any]:
        checkpoint = store.save_checkpoint(
            user,
            model_id,
            kind=kind,
            name=name,
            ttl_seconds=ttl,
            overwrite=overwrite,
            uri_scheme=scheme,
        )
        checkpoint_meta.set_checkpoint_metadata(store, model_id, kind, name, metadata)
        return _save_result(kind, checkpoint.tinker_path)

    return job


def _save_result(kind: str, path: str) -> dict[str, Any]:
    if kind == "weights":
        return models.SaveWeightsResult(path=path).model_dump(mode="json")
    result = models.SaveWeightsForSamplerResult(path=path)
    return result.model_dump(mode="json", exclude={"sampling_session_id"})


async def save_weights(call: Call) -> Response:
    body = call.json()
    request = call.parse(models.SaveWeightsRequest, body)
    name = validate_name(request.path)
    ttl = _ttl(request.ttl_seconds)
    metadata = _string_metadata(body)
    await _require_own_run(call, request.model_id)
    spec = _save_spec(call, request.model_id, "weights", name, ttl, request.overwrite, metadata)
    return await _submit(
        call,
        operation="save_weights",
        model_id=request.model_id,
        job=resumable_job(call.store, spec),
        body=body,
        seq_id=request.seq_id,
        resumable=spec,
    )


def _ephemeral_sampler_job(call: Call, model_id: str, seq_id: int) -> Job:
    """``save_weights_and_get_sampling_client``: an unnamed, unlisted save bound to a new
    sampling session (docs/protocol.md §11.5)."""
    user, store = call.user, call.store

    def job() -> dict[str, Any]:
        sampler_id = sessions.ephemeral_sampler(store, user, model_id, seq_id)
        result = models.SaveWeightsForSamplerResult(sampling_session_id=sampler_id)
        return result.model_dump(mode="json", exclude={"path"})

    return job


async def save_weights_for_sampler(call: Call) -> Response:
    body = call.json()
    request = call.parse(models.SaveWeightsForSamplerRequest, body)
    if request.path is None and request.sampling_session_seq_id is None:
        raise UsageError("invalid field path: field required")
    ttl = _ttl(request.ttl_seconds)
    if request.path is not None:
        name = validate_name(request.path)
    metadata = _string_metadata(body)
    await _require_own_run(call, request.model_id)
    spec = None
    if request.path is None:
        assert request.sampling_session_seq_id is not None
        job = _ephemeral_sampler_job(call, request.model_id, request.sampling_session_seq_id)
    else:
        spec = _save_spec(
            call, request.model_id, "sampler_weights", name, ttl, request.overwrite, metadata
        )
        job = resumable_job(call.store, spec)
    return await _submit(
        call,
        operation="save_weights_for_sampler",
        model_id=request.model_id,
        job=job,
        body=body,
        seq_id=request.seq_id,
        resumable=spec,
    )


async def load_weights(call: Call) -> Response:
    body = call.json()
    if body.get("model_id") is None and "session_id" in body:
        return await _create_via_load(call, body)
    request = call.parse(models.LoadWeightsRequest, body)
    source = str(CheckpointRef.parse(request.path))
    await _require_own_run(call, request.model_id)
    user, store, scheme = call.user, call.store, call.settings.uri_scheme

    def job() -> dict[str, Any]:
        path = store.load_checkpoint(
            user, request.model_id, source=source, optimizer=request.optimizer, uri_scheme=scheme
        )
        return models.LoadWeightsResult(path=path).model_dump(mode="json", exclude={"model_id"})

    return await _submit(
        call,
        operation="load_weights",
        model_id=request.model_id,
        job=job,
        body=body,
        seq_id=request.seq_id,
    )


async def _create_via_load(call: Call, body: dict[str, Any]) -> Response:
    """docs/protocol.md §11.2: a new model ``<session>:train:<seq>`` whose base model, rank
    and modules come from the checkpoint, loaded from it in the same future."""
    session_id, seq = body.get("session_id"), body.get("model_seq_id")
    path, optimizer = body.get("path"), body.get("optimizer")
    if not isinstance(session_id, str):
        raise UsageError("invalid field session_id: expected a string")
    if type(seq) is not int or seq < 0:
        raise UsageError("invalid field model_seq_id: expected an integer >= 0")
    if not isinstance(path, str):
        raise UsageError("invalid field path: field required")
    if type(optimizer) is not bool:
        raise UsageError("invalid field optimizer: expected a boolean")
    base_model = body.get("base_model")
    if base_model is not None and not isinstance(base_model, str):
        raise UsageError("invalid field base_model: expected a string")
    run_metadata = body.get("user_metadata")
    if run_metadata is not None and not isinstance(run_metadata, dict):
        raise UsageError("invalid field user_metadata: expected an object")
    requested_optimizer = checkpoint_meta.optimizer_config(body.get("optimizer_config"))
    source = str(CheckpointRef.parse(path))
    await call.run(sessions.heartbeat, call.store, call.user, session_id)
    user, store, scheme = call.user, call.store, call.settings.uri_scheme
    model_id = f"{session_id}:train:{seq}"

    def job() -> dict[str, Any]:
        _, lora, source_base, source_optimizer = checkpoint_meta.source_config(store, user, source)
        if base_model is not None and base_model != source_base:
            raise UsageError(
                f"checkpoint {source} is for base model {source_base}, not {base_model}"
            )
        optimizer_config = requested_optimizer or source_optimizer
        if optimizer and optimizer_config != source_optimizer:
            raise UsageError("optimizer_config cannot override the restored optimizer state")
        run_id = store.create_run(
            user,
            session_id=session_id,
            model_seq_id=seq,
            base_model=source_base,
            lora_config=lora,
            user_metadata=run_metadata,
        )
        checkpoint_meta.set_run_optimizer(store, run_id, optimizer_config)
        loaded = store.load_checkpoint(
            user, run_id, source=source, optimizer=optimizer, uri_scheme=scheme
        )
        return models.LoadWeightsResult(path=loaded, model_id=run_id).model_dump(mode="json")

    return await _submit(call, operation="load_weights", model_id=model_id, job=job, body=body)


async def weights_info(call: Call) -> Response:
    request = call.parse(models.WeightsInfoRequest)
    source = str(CheckpointRef.parse(request.tinker_path))
    info = await call.run(call.store.weights_info, call.user, source)
    optimizer = await call.run(
        lambda: checkpoint_meta.source_config(call.store, call.user, source)[3]
    )
    return json_response(info.model_copy(update={"optimizer_config": optimizer}))


async def retrieve_future(call: Call) -> Response:
    request = call.parse(models.RetrieveFutureRequest)
    record = await call.context.futures.wait(
        call.user, request.request_id, hold=call.settings.future_poll_hold
    )
    if record.status == "pending" or record.result is None:
        return json_response(models.TryAgain(request_id=record.request_id))
    return json_response(record.result)


ROUTES = [
    route("/api/v1/create_model", create_model, ["POST"]),
    # Read-only POSTs: a replay would add nothing, so they skip idempotency records.
    route("/api/v1/get_info", get_info, ["POST"], idempotent=False),
    route("/api/v1/save_weights", save_weights, ["POST"]),
    route("/api/v1/save_weights_for_sampler", save_weights_for_sampler, ["POST"]),
    route("/api/v1/load_weights", load_weights, ["POST"]),
    route("/api/v1/weights_info", weights_info, ["POST"], idempotent=False),
    route("/api/v1/retrieve_future", retrieve_future, ["POST"], idempotent=False),
]
