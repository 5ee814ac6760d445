"""Pydantic wire models shared by client and server (docs/protocol.md §8).

Response models ignore unknown fields and accept any ``checkpoint_type`` string, so newer
deployments do not break the client. Request models forbid unknown fields: our client never
sends one. The server is tolerant instead: it drops unknown keys before validating
(``parse_tolerant``), because newer SDKs add fields.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from logits_cli.utc_text import utc_text


def _to_utc(value: Any) -> Any:
    """Accept RFC 3339 (``Z`` or offset), Unix seconds, and zone-less values read as UTC."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a datetime")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        value = datetime.fromisoformat(text)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    return value


UTCDateTime = Annotated[
    datetime,
    BeforeValidator(_to_utc),
    PlainSerializer(utc_text, return_type=str, when_used="json"),
]


class WireModel(BaseModel):
    """A response: unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)


class RequestModel(BaseModel):
    """A request body our client sends: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


M = TypeVar("M", bound=BaseModel)


def parse_tolerant(model: type[M], data: Any) -> M:
    """Validate ``data`` against ``model`` after dropping keys it does not define."""
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k in model.model_fields}
    return model.model_validate(data)


# -- §8.1 / §8.2 / §8.3 -----------------------------------------------------------------


class Checkpoint(WireModel):
    checkpoint_id: str
    checkpoint_type: str  # "training" | "sampler"; any string accepted (§10.2)
    time: UTCDateTime
    tinker_path: str
    size_bytes: int | None = None
    public: bool = False
    expires_at: UTCDateTime | None = None
    sha256: str | None = None
    # §11.4: metadata sent with the save (SDK 0.38); the SDK reads string values only.
    user_metadata: dict[str, str] | None = None

    @property
    def kind(self) -> str:
        return self.checkpoint_id.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.checkpoint_id.split("/", 1)[-1]


class TrainingRun(WireModel):
    training_run_id: str
    base_model: str
    model_owner: str
    is_lora: bool
    corrupted: bool = False
    lora_rank: int | None = None
    last_request_time: UTCDateTime
    last_checkpoint: Checkpoint | None = None
    last_sampler_checkpoint: Checkpoint | None = None
    user_metadata: dict[str, str] | None = None


class Cursor(WireModel):
    offset: int
    limit: int
    total_count: int


class CheckpointsListResponse(WireModel):
    checkpoints: list[Checkpoint]
    cursor: Cursor | None = None


class TrainingRunsResponse(WireModel):
    training_runs: list[TrainingRun]
    cursor: Cursor


class CheckpointArchiveUrlResponse(WireModel):
    url: str
    expires: UTCDateTime


# -- §8.4 futures -------------------------------------------------------------------------


class FutureHandle(WireModel):
    request_id: str
    model_id: str | None = None


class CreateModelResult(WireModel):
    model_id: str
    type: Literal["create_model"] = "create_model"


class SaveWeightsResult(WireModel):
    path: str
    type: Literal["save_weights"] | None = "save_weights"


class SaveWeightsForSamplerResult(WireModel):
    path: str | None = None
    sampling_session_id: str | None = None
    type: Literal["save_weights_for_sampler"] | None = "save_weights_for_sampler"


class LoadWeightsResult(WireModel):
    path: str | None = None
    model_id: str | None = None  # §11.2: set by create-via-load
    type: Literal["load_weights"] | None = "load_weights"


class TryAgain(WireModel):
    type: Literal["try_again"] = "try_again"
    request_id: str
    queue_state: str = "active"
    queue_state_reason: str | None = None


class RequestFailed(WireModel):
    error: str
    category: str = "unknown"
    code: str | None = None


# -- §8.5 other responses -----------------------------------------------------------------


class WeightsInfoResponse(WireModel):
    base_model: str
    is_lora: bool
    lora_rank: int | None = None
    train_unembed: bool | None = None
    train_mlp: bool | None = None
    train_attn: bool | None = None
    # §11.4; SDK 0.38 requires an object here when the key is present (never null).
    optimizer_config: dict[str, Any] = Field(default_factory=lambda: {"type": "adamw"})


class ModelData(WireModel):
    arch: str | None = None
    model_name: str | None = None
    tokenizer_id: str | None = None


class GetInfoResponse(WireModel):
    type: Literal["get_info"] | None = "get_info"
    model_id: str
    model_data: ModelData
    is_lora: bool | None = None
    lora_rank: int | None = None
    model_name: str | None = None
    optimizer_config: dict[str, Any] = Field(default_factory=lambda: {"type": "adamw"})


class CreateSessionResponse(WireModel):
    type: Literal["create_session"] = "create_session"
    session_id: str
    info_message: str | None = None
    warning_message: str | None = None
    error_message: str | None = None


class SupportedModel(WireModel):
    model_name: str | None = None
    max_context_length: int | None = None
    trainable: bool | None = None  # 2026 dialect (§11.4); absent from older servers
    sampleable: bool | None = None


class ServerCapabilities(WireModel):
    supported_models: list[SupportedModel]


class HealthResponse(WireModel):
    status: str = "ok"


class AuthTokenResponse(WireModel):
    jwt: str


class HeartbeatResponse(WireModel):
    type: Literal["session_heartbeat"] = "session_heartbeat"


class TelemetryResponse(WireModel):
    status: str = "accepted"


class ErrorBody(WireModel):
    detail: str
    code: str


class ClientConfigResponse(WireModel):
    """§8.6. Only ``pjwt_auth_enabled`` concerns this protocol; the rest keep defaults."""

    pjwt_auth_enabled: bool = False


# -- §11: the SDK 0.38 dialect ----------------------------------------------------------------


class SaveWeightsExternalResult(WireModel):
    path: str
    size_bytes: int | None = None
    type: Literal["save_weights_external"] | None = "save_weights_external"


class ExternalWeightsUrlsResponse(WireModel):
    """§11.3: one signed URL per file, keyed by its path relative to the checkpoint root."""

    urls: dict[str, str]
    expires: UTCDateTime


class CopyWeightsResponse(WireModel):
    tinker_path: str


class ListSessionsResponse(WireModel):
    sessions: list[str]


class GetSessionResponse(WireModel):
    training_run_ids: list[str]
    sampler_ids: list[str]
    user_metadata: dict[str, str] | None = None
    display_name: str | None = None


class SessionSummary(WireModel):
    session_id: str
    created_at: UTCDateTime
    owner: str
    project_id: str
    status: dict[str, Any] | None = None
    checkpoints_count: int
    display_name: str | None = None
    user_metadata: dict[str, str] | None = None
    checkpoint_storage_bytes: int | None = None


class SessionSearchResponse(WireModel):
    sessions: list[SessionSummary]
    next_cursor: dict[str, Any] | None = None


class CreateSamplingSessionResponse(WireModel):
    type: Literal["create_sampling_session"] = "create_sampling_session"
    sampling_session_id: str


class GetSamplerResponse(WireModel):
    sampler_id: str
    base_model: str
    model_path: str | None = None


# -- requests (§4.1, §5) --------------------------------------------------------------------


class ClientConfigRequest(RequestModel):
    sdk_version: str


class CreateSessionRequest(RequestModel):
    tags: list[str] = Field(default_factory=list)
    user_metadata: dict[str, Any] | None = None
    sdk_version: str
    project_id: str | None = None


class SessionHeartbeatRequest(RequestModel):
    session_id: str


class LoraConfig(RequestModel):
    rank: int = 32
    seed: int | None = None
    train_unembed: bool = True
    train_mlp: bool = True
    train_attn: bool = True


class CreateModelRequest(RequestModel):
    session_id: str
    model_seq_id: int = Field(ge=0)
    base_model: str
    user_metadata: dict[str, Any] | None = None
    lora_config: LoraConfig | None = None


class GetInfoRequest(RequestModel):
    model_id: str


class SaveWeightsRequest(RequestModel):
    model_id: str
    path: str
    seq_id: int | None = None
    ttl_seconds: int | None = None
    overwrite: bool = False


class SaveWeightsForSamplerRequest(RequestModel):
    model_id: str
    path: str | None = None
    seq_id: int | None = None
    ttl_seconds: int | None = None
    overwrite: bool = False
    sampling_session_seq_id: int | None = None


class LoadWeightsRequest(RequestModel):
    model_id: str
    path: str
    optimizer: bool
    seq_id: int | None = None


class CreateViaLoadRequest(RequestModel):
    """§11.2: ``load_weights`` that creates ``<session>:train:<model_seq_id>`` from ``path``."""

    session_id: str
    model_seq_id: int
    path: str
    optimizer: bool = False


class SaveWeightsExternalRequest(RequestModel):
    """§11.3: export the run's adapter as ``external_weights/<path>``."""

    model_id: str
    path: str
    ttl_seconds: int | None = None


class WeightsInfoRequest(RequestModel):
    tinker_path: str


class RetrieveFutureRequest(RequestModel):
    request_id: str


class TtlRequest(RequestModel):
    ttl_seconds: int | None


# -- archive manifest (§7.4) and the local download manifest (docs/ARCHITECTURE.md §3) ---------------


class FileDigest(WireModel):
    sha256: str
    size: int


class CheckpointComplete(WireModel):
    """The ``checkpoint_complete`` member of an archive."""

    checkpoint_type: str
    created: UTCDateTime
    files: dict[str, FileDigest]
    tinker_path: str


class LocalManifest(WireModel):
    """``DEST/NAME/.logits-checkpoint.json``, written last by a finished download."""

    format: Literal[1] = 1
    tinker_path: str
    checkpoint_id: str
    checkpoint_type: str
    # The archive generation: the digest and size of the archive the files came from.
    # The files generation (docs/protocol.md §11.6) has no archive: both are None.
    archive_sha256: str | None = None
    archive_size: int | None = None
    created: UTCDateTime | None = None
    downloaded_at: UTCDateTime
    files: dict[str, FileDigest]
    # "full" (a training checkpoint with optimizer state), "adapter-only" (sampler weights,
    # or a PEFT export); None in manifests written before this field existed.
    content: str | None = None
    # The export a files-generation download of a weights/ checkpoint went through.
    export: str | None = None
