"""Models, weights and futures (docs/protocol.md §5.2–§5.4)."""

from __future__ import annotations

import threading

import pytest
from server_helpers import Api, assert_error

# Runs on SQLite + local directory and on PostgreSQL (tests/conftest.py).
TEAM_BACKENDS = True

REQUEST_ID_CHARS = set("0123456789abcdef")


def test_create_model_handle_and_result(alice: Api) -> None:
    session = alice.session()
    body = {
        "session_id": session,
        "model_seq_id": 3,
        "base_model": "logits/tiny",
        "lora_config": {"rank": 8, "seed": 1, "train_unembed": False},
        "user_metadata": {"purpose": "test", "n": 1},
        "type": "create_model",
    }
    handle = alice.ok(alice.post("/api/v1/create_model", body))
    assert handle["model_id"] == f"{session}:train:3"
    assert handle["request_id"].startswith("req_") and len(handle["request_id"]) == 36
    assert set(handle["request_id"][4:]) <= REQUEST_ID_CHARS
    assert alice.future_result(handle) == {"model_id": handle["model_id"], "type": "create_model"}
    # Results can be fetched again until the retention passes.
    assert alice.future_result(handle) == {"model_id": handle["model_id"], "type": "create_model"}
    run = alice.ok(alice.http.get(f"/api/v1/training_runs/{handle['model_id']}"))
    assert run["lora_rank"] == 8
    assert run["user_metadata"] == {"purpose": "test", "n": "1"}
    info = alice.ok(
        alice.post("/api/v1/get_info", {"model_id": handle["model_id"], "type": "get_info"})
    )
    assert info["model_id"] == handle["model_id"]
    assert (
        info["model_name"] == "logits/tiny" and info["lora_rank"] == 8 and info["is_lora"] is True
    )
    weights = alice.ok(
        alice.post(
            "/api/v1/weights_info",
            {"tinker_path": alice.save(handle["model_id"], "w")["path"]},
        )
    )
    assert weights == {
        "base_model": "logits/tiny",
        "is_lora": True,
        "lora_rank": 8,
        "train_unembed": False,
        "train_mlp": True,
        "train_attn": True,
        "optimizer_config": {"type": "adamw"},  # docs/protocol.md §11.4
    }


def test_create_model_repeat_same_body_same_run_other_body_fails(alice: Api) -> None:
    session = alice.session()
    body = {"session_id": session, "model_seq_id": 0, "base_model": "logits/tiny"}
    first = alice.future_result(alice.ok(alice.post("/api/v1/create_model", body)))
    again = alice.future_result(alice.ok(alice.post("/api/v1/create_model", body)))
    assert first == again
    other = alice.future_result(
        alice.ok(alice.post("/api/v1/create_model", {**body, "lora_config": {"rank": 2}}))
    )
    assert other["category"] == "user" and other["code"] == "already_exists"


def test_create_model_failures_inside_the_future(alice: Api, live_server) -> None:
    session = alice.session()
    unknown = alice.future_result(
        alice.ok(
            alice.post(
                "/api/v1/create_model",
                {"session_id": session, "model_seq_id": 0, "base_model": "nobody/nothing"},
            )
        )
    )
    assert unknown["category"] == "user" and unknown["code"] == "not_found"
    too_big = alice.future_result(
        alice.ok(
            alice.post(
                "/api/v1/create_model",
                {
                    "session_id": session,
                    "model_seq_id": 1,
                    "base_model": "logits/tiny",
                    "lora_config": {"rank": live_server.settings.max_rank + 1},
                },
            )
        )
    )
    assert too_big["category"] == "user" and too_big["code"] == "invalid_argument"


def test_create_model_http_errors(alice: Api, bob: Api) -> None:
    session = alice.session()
    base = {"session_id": session, "model_seq_id": 0, "base_model": "logits/tiny"}
    assert_error(bob.post("/api/v1/create_model", base), 404, "not_found")
    assert_error(alice.post("/api/v1/create_model", {**base, "session_id": "x"}), 404, "not_found")
    for bad in (
        {**base, "lora_config": {"rank": 0}},
        {**base, "lora_config": {"train_attn": False, "train_mlp": False, "train_unembed": False}},
        {**base, "lora_config": {"rank": "8"}},
        {**base, "lora_config": []},
        {**base, "model_seq_id": -1},
        {**base, "model_seq_id": True},
        {"session_id": session, "model_seq_id": 0},
    ):
        assert_error(alice.post("/api/v1/create_model", bad), 400, "invalid_argument")


def test_save_and_load_round_trip(alice: Api, bob: Api, live_server) -> None:
    model_id = alice.create_model()
    saved = alice.save(model_id, "step-1", seq_id=1, ttl_seconds=3600, type="save_weights")
    assert saved == {"path": f"logits://{model_id}/weights/step-1", "type": "save_weights"}
    sampler = alice.save(model_id, "final", sampler=True, seq_id=2)
    assert sampler == {
        "path": f"logits://{model_id}/sampler_weights/final",
        "type": "save_weights_for_sampler",
    }
    checkpoint = alice.checkpoint(model_id, "weights/step-1")
    assert checkpoint["expires_at"] is not None and checkpoint["checkpoint_type"] == "training"
    for source, optimizer in ((saved["path"], True), (sampler["path"], False)):
        # Either scheme is accepted on input; the answer uses the server's.
        tinker_source = source.replace("logits://", "tinker://")
        body = {"model_id": model_id, "path": tinker_source, "optimizer": optimizer, "seq_id": 3}
        loaded = alice.future_result(alice.ok(alice.post("/api/v1/load_weights", body)))
        assert loaded == {"path": source, "type": "load_weights"}
    bad_kind = alice.future_result(
        alice.ok(
            alice.post(
                "/api/v1/load_weights",
                {"model_id": model_id, "path": sampler["path"], "optimizer": True},
            )
        )
    )
    assert bad_kind["category"] == "user" and bad_kind["code"] == "invalid_argument"
    # Bob cannot load alice's private checkpoint into his own run.
    bobs = bob.create_model()
    hidden = bob.future_result(
        bob.ok(
            bob.post(
                "/api/v1/load_weights",
                {"model_id": bobs, "path": saved["path"], "optimizer": False},
            )
        )
    )
    assert hidden["category"] == "user" and hidden["code"] == "not_found"
    # Nor use alice's run.
    assert_error(
        bob.post("/api/v1/save_weights", {"model_id": model_id, "path": "x"}), 404, "not_found"
    )
    assert_error(bob.post("/api/v1/get_info", {"model_id": model_id}), 404, "not_found")
    assert_error(bob.post("/api/v1/weights_info", {"tinker_path": saved["path"]}), 404, "not_found")


def test_load_incompatible_rank_fails(alice: Api) -> None:
    source = alice.save(alice.create_model(rank=4), "a")["path"]
    other = alice.create_model(rank=8)
    failed = alice.future_result(
        alice.ok(
            alice.post(
                "/api/v1/load_weights", {"model_id": other, "path": source, "optimizer": False}
            )
        )
    )
    assert failed["category"] == "user" and failed["code"] == "invalid_argument"


def test_name_conflict_is_a_failed_future_and_overwrite_replaces(alice: Api) -> None:
    model_id = alice.create_model()
    alice.save(model_id, "dup")
    before = alice.checkpoint(model_id, "weights/dup")
    failed = alice.save(model_id, "dup", overwrite=False)
    assert failed["category"] == "user" and failed["code"] == "already_exists"
    assert "error" in failed
    sampler_failed = alice.save(model_id, "x", sampler=True)
    assert "error" not in sampler_failed
    assert alice.save(model_id, "x", sampler=True)["code"] == "already_exists"
    replaced = alice.save(model_id, "dup", overwrite=True)
    assert replaced["path"].endswith("/weights/dup")
    after = alice.checkpoint(model_id, "weights/dup")
    assert after["time"] > before["time"]


def test_ephemeral_sampler_save_opens_a_sampling_session(alice: Api) -> None:
    # docs/protocol.md §11.5: unnamed, unlisted, bound to a sampling session of the run.
    model_id = alice.create_model()
    session_id = model_id.split(":")[0]
    body = {"model_id": model_id, "sampling_session_seq_id": 0, "seq_id": 1}
    result = alice.future_result(alice.ok(alice.post("/api/v1/save_weights_for_sampler", body)))
    assert result == {
        "sampling_session_id": f"{session_id}:sample:0",
        "type": "save_weights_for_sampler",
    }
    sampler = alice.ok(alice.http.get(f"/api/v1/samplers/{session_id}:sample:0"))
    assert sampler == {
        "sampler_id": f"{session_id}:sample:0",
        "base_model": "logits/tiny",
        "model_path": None,
    }
    listed = alice.ok(alice.http.get(f"/api/v1/training_runs/{model_id}/checkpoints"))
    assert listed["checkpoints"] == []


def test_duplicate_seq_id_answers_the_original_future(alice: Api, live_server) -> None:
    model_id = alice.create_model()
    body = {"model_id": model_id, "path": "once", "seq_id": 5, "overwrite": False}
    first = alice.ok(alice.post("/api/v1/save_weights", body))
    # The SDK's outer retry: a fresh idempotency key, the same seq_id and body.
    second = alice.ok(alice.post("/api/v1/save_weights", body, headers={"X-Idempotency-Key": "k2"}))
    assert second["request_id"] == first["request_id"]
    assert alice.future_result(second)["path"].endswith("/weights/once")
    listed = alice.ok(alice.http.get(f"/api/v1/training_runs/{model_id}/checkpoints"))
    assert [c["checkpoint_id"] for c in listed["checkpoints"]] == ["weights/once"]
    # Another seq_id is a new request, which now conflicts.
    third = alice.ok(alice.post("/api/v1/save_weights", {**body, "seq_id": 6}))
    assert third["request_id"] != first["request_id"]
    assert alice.future_result(third)["code"] == "already_exists"


def test_retrieve_future_of_unknown_or_foreign_request_is_404(alice: Api, bob: Api) -> None:
    handle = alice.ok(
        alice.post(
            "/api/v1/create_model",
            {"session_id": alice.session(), "model_seq_id": 0, "base_model": "logits/tiny"},
        )
    )
    assert_error(
        bob.post("/api/v1/retrieve_future", {"request_id": handle["request_id"]}), 404, "not_found"
    )
    assert_error(
        alice.post("/api/v1/retrieve_future", {"request_id": "req_" + "0" * 32}), 404, "not_found"
    )
    assert_error(alice.post("/api/v1/retrieve_future", {}), 400, "invalid_argument")


def test_retrieve_future_past_retention_is_410(server_factory) -> None:
    server = server_factory(future_retention=0)
    api = Api(server, server.api_key("alice"))
    body = {"session_id": api.session(), "model_seq_id": 0, "base_model": "logits/tiny"}
    handle = api.ok(api.post("/api/v1/create_model", body))
    while True:
        response = api.post("/api/v1/retrieve_future", {"request_id": handle["request_id"]})
        if response.status_code != 200:
            break
        assert response.json()["type"] == "try_again"
    assert_error(response, 410, "gone")


@pytest.mark.slow
def test_large_save_is_pending_then_completes_through_long_poll(server_factory) -> None:
    """Llama-3.2-1B at rank 64: hundreds of MB, long enough to observe ``try_again``."""
    server = server_factory(future_poll_hold=0.2)
    api = Api(server, server.api_key("alice"))
    model_id = api.create_model(base_model="meta-llama/Llama-3.2-1B", rank=64)
    handle = api.ok(api.post("/api/v1/save_weights", {"model_id": model_id, "path": "big"}))
    answers = []
    while not answers or answers[-1].get("type") == "try_again":
        response = api.post("/api/v1/retrieve_future", {"request_id": handle["request_id"]})
        answers.append(api.ok(response))
    assert answers[0] == {
        "type": "try_again",
        "request_id": handle["request_id"],
        "queue_state": "active",
        "queue_state_reason": None,
    }
    assert answers[-1] == {"path": f"logits://{model_id}/weights/big", "type": "save_weights"}
    assert api.checkpoint(model_id, "weights/big")["size_bytes"] > 100_000_000


def test_long_poll_wakes_when_another_process_finishes_the_future(server_factory) -> None:
    """A future finished through the store alone (as by another server process) ends the hold."""
    server = server_factory(future_poll_hold=30)
    api = Api(server, server.api_key("alice"))
    request_id, _ = server.store.create_future("alice", operation="save_weights", model_id=None)
    result = {"path": "logits://r:train:0/weights/elsewhere", "type": "save_weights"}
    finisher = threading.Timer(
        0.2, lambda: server.store.finish_future(request_id, result=result, failed=False)
    )
    finisher.start()
    try:
        answer = api.ok(api.post("/api/v1/retrieve_future", {"request_id": request_id}))
    finally:
        finisher.join()
    assert answer == result
    api.http.close()
