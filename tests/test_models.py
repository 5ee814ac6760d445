"""Wire models: tolerant reading, exact datetimes, unknown kinds from newer deployments."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from logits_cli import models


@pytest.mark.parametrize(
    "value",
    [
        "2025-06-01T12:00:05Z",
        "2025-06-01T12:00:05.000Z",
        "2025-06-01T14:00:05+02:00",
        "2025-06-01T12:00:05",
        1748779205,
        1748779205.0,
    ],
)
def test_datetimes_in_every_accepted_form(value: object) -> None:
    run = models.Checkpoint.model_validate(
        {
            "checkpoint_id": "weights/a",
            "checkpoint_type": "training",
            "time": value,
            "tinker_path": "logits://r/weights/a",
        }
    )
    assert run.time == datetime(2025, 6, 1, 12, 0, 5, tzinfo=UTC)


def test_datetimes_serialise_as_rfc3339_z() -> None:
    ckpt = models.Checkpoint(
        checkpoint_id="weights/a",
        checkpoint_type="training",
        time=datetime(2025, 6, 1, 12, 0, 5, 123456, tzinfo=UTC),
        tinker_path="logits://r/weights/a",
    )
    data = ckpt.model_dump(mode="json")
    assert data["time"] == "2025-06-01T12:00:05.123456Z"
    assert data["expires_at"] is None
    assert data["public"] is False


def test_responses_ignore_unknown_fields_and_kinds() -> None:
    ckpt = models.Checkpoint.model_validate(
        {
            "checkpoint_id": "external_weights/x",
            "checkpoint_type": "external",
            "time": "2025-06-01T12:00:05Z",
            "tinker_path": "tinker://r/external_weights/x",
            "user_metadata": {"k": "v"},
            "brand_new_field": 1,
        }
    )
    assert (ckpt.kind, ckpt.name, ckpt.checkpoint_type) == ("external_weights", "x", "external")


def test_requests_forbid_unknown_fields_but_server_parsing_tolerates_them() -> None:
    body = {"model_id": "m", "path": "a", "type": "save_weights", "seq_id": 3, "future": True}
    with pytest.raises(ValidationError):
        models.SaveWeightsRequest.model_validate(body)
    parsed = models.parse_tolerant(models.SaveWeightsRequest, body)
    assert (parsed.model_id, parsed.path, parsed.seq_id, parsed.overwrite) == ("m", "a", 3, False)


def test_training_runs_response_requires_cursor() -> None:
    with pytest.raises(ValidationError):
        models.TrainingRunsResponse.model_validate({"training_runs": []})
