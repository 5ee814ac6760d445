"""Idempotency keys (docs/protocol.md §4.5)."""

from __future__ import annotations

import hashlib

from server_helpers import Api, assert_error

# Runs on SQLite + local directory and on PostgreSQL (tests/conftest.py).
TEAM_BACKENDS = True


def test_replay_is_byte_for_byte_and_runs_once(alice: Api) -> None:
    session = alice.session()
    body = {"session_id": session, "model_seq_id": 0, "base_model": "logits/tiny"}
    key = {"X-Idempotency-Key": "logits-create-1"}
    first = alice.post("/api/v1/create_model", body, headers=key)
    again = alice.post("/api/v1/create_model", body, headers=key)
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    alice.future_result(first.json())

    model_id = first.json()["model_id"]
    save = {"model_id": model_id, "path": "idem"}
    key = {"X-Idempotency-Key": "stainless-python-retry-abc"}
    handle = alice.post("/api/v1/save_weights", save, headers=key)
    replayed = alice.post("/api/v1/save_weights", save, headers=key)
    assert replayed.content == handle.content
    assert alice.future_result(replayed.json())["path"].endswith("/weights/idem")
    listed = alice.ok(alice.http.get(f"/api/v1/training_runs/{model_id}/checkpoints"))
    assert len(listed["checkpoints"]) == 1


def test_reused_key_with_another_body_is_400(alice: Api) -> None:
    key = {"X-Idempotency-Key": "k-1"}
    body = {"tags": [], "sdk_version": "x"}
    assert alice.post("/api/v1/create_session", body, headers=key).status_code == 200
    other = alice.post("/api/v1/create_session", {**body, "tags": ["t"]}, headers=key)
    assert_error(other, 400, "invalid_argument")


def test_keys_are_scoped_by_user_and_path(alice: Api, bob: Api) -> None:
    key = {"X-Idempotency-Key": "shared"}
    body = {"tags": [], "sdk_version": "x"}
    mine = alice.post("/api/v1/create_session", body, headers=key).json()["session_id"]
    theirs = bob.post("/api/v1/create_session", body, headers=key).json()["session_id"]
    assert mine != theirs


def test_recorded_4xx_replays_and_204_replays(alice: Api) -> None:
    model_id = alice.create_model()
    alice.save(model_id, "p")
    publish = f"/api/v1/training_runs/{model_id}/checkpoints/weights/p/publish"
    key = {"X-Idempotency-Key": "publish-1"}
    assert alice.http.post(publish, headers=key).status_code == 204
    replay = alice.http.post(publish, headers=key)
    assert replay.status_code == 204 and replay.headers["idempotent-replayed"] == "true"
    # A 409 is recorded too and replays with its headers: a run with a checkpoint left.
    conflict_key = {"X-Idempotency-Key": "delete-run-1"}
    delete_run = f"/api/v1/training_runs/{model_id}"
    assert_error(alice.http.delete(delete_run, headers=conflict_key), 409, "not_empty")
    replayed = alice.http.delete(delete_run, headers=conflict_key)
    assert_error(replayed, 409, "not_empty")
    assert replayed.headers["x-should-retry"] == "false"
    assert replayed.headers["idempotent-replayed"] == "true"


def test_401_is_not_recorded(live_server, alice: Api) -> None:
    body = {"tags": [], "sdk_version": "x"}
    key = {"X-Idempotency-Key": "after-login"}
    bad = Api(live_server, "tml-nope")
    assert_error(bad.post("/api/v1/create_session", body, headers=key), 401, "unauthenticated")
    response = alice.post("/api/v1/create_session", body, headers=key)
    assert response.status_code == 200 and "idempotent-replayed" not in response.headers
    bad.http.close()


def test_request_still_running_is_503_with_retry_after(alice: Api, live_server) -> None:
    body = b'{"tags":[],"sdk_version":"x"}'
    # The first request with this key has claimed it and not finished yet.
    claimed = live_server.store.idempotency_claim(
        ("alice", "POST", "/api/v1/create_session", "in-flight"),
        hashlib.sha256(body).hexdigest(),
    )
    assert claimed is None
    response = alice.http.post(
        "/api/v1/create_session",
        content=body,
        headers={"X-Idempotency-Key": "in-flight", "Content-Type": "application/json"},
    )
    assert_error(response, 503, "unavailable")
    assert response.headers["retry-after"] == "1"


def test_invalid_key_is_400(alice: Api) -> None:
    for key in ("has space", "x" * 256):
        response = alice.post(
            "/api/v1/create_session",
            {"tags": [], "sdk_version": "x"},
            headers={"X-Idempotency-Key": key},
        )
        assert_error(response, 400, "invalid_argument")
