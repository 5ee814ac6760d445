"""The SDK 0.38 dialect over plain HTTP (docs/protocol.md §11): sessions, sampling sessions,
create-via-load, exports, per-file URLs, copies, optimizer configs, generations, two users."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import httpx
import pyrage
import pytest
from server_helpers import Api, assert_error

V038 = {"x-sdk-version": "0.38.0"}


def _finish(api: Api, session_id: str, reason: str = "success") -> httpx.Response:
    return api.post(f"/api/v1/sessions/{session_id}/finish", {"reason": {"type": reason}})


def _export(api: Api, model_id: str, name: str, **fields: Any) -> dict[str, Any]:
    handle = api.ok(
        api.post("/api/v1/save_weights_external", {"model_id": model_id, "path": name, **fields})
    )
    return api.future_result(handle)


def _urls(api: Api, model_id: str, name: str) -> httpx.Response:
    return api.http.get(
        f"/api/v1/training_runs/{model_id}/checkpoints/external_weights/{name}/external_weights_urls"
    )


# -- sessions (§11.1) -----------------------------------------------------------------------


def test_finish_is_idempotent_and_ends_heartbeats_and_new_models(alice: Api) -> None:
    session = alice.session()
    model_id = alice.create_model(session=session)
    beat = {"session_id": session, "type": "session_heartbeat"}
    assert alice.ok(alice.post("/api/v1/session_heartbeat", beat)) == {"type": "session_heartbeat"}
    assert alice.ok(_finish(alice, session)) == {}
    assert alice.ok(_finish(alice, session, "errored")) == {}  # first reason wins, still 2xx
    assert_error(alice.post("/api/v1/session_heartbeat", beat), 410, "gone")
    body = {"session_id": session, "model_seq_id": 1, "base_model": "logits/tiny"}
    assert_error(alice.post("/api/v1/create_model", body), 410, "gone")
    load = {"session_id": session, "model_seq_id": 2, "path": "x", "optimizer": False}
    load["path"] = f"logits://{model_id}/weights/none"
    assert_error(alice.post("/api/v1/load_weights", load), 410, "gone")
    # Still readable, and reported as finished by the first reason.
    got = alice.ok(alice.http.get(f"/api/v1/sessions/{session}"))
    assert got == {
        "training_run_ids": [model_id],
        "sampler_ids": [],
        "user_metadata": {},
        "display_name": None,
    }
    found = alice.ok(alice.post("/api/v1/sessions/search", {"session_id": session}))
    [summary] = found["sessions"]
    assert summary["status"] == {
        "type": "client_finished",
        "reason": {"type": "success"},
        "detail": None,
    }
    assert found["next_cursor"] is None


def test_session_listing_search_and_paging(alice: Api, bob: Api) -> None:
    sessions = [alice.session() for _ in range(3)]
    bobs = bob.session()
    listed = alice.ok(alice.http.get("/api/v1/sessions", params={"limit": 2}))["sessions"]
    assert listed == sessions[::-1][:2]
    assert bobs not in alice.ok(alice.http.get("/api/v1/sessions"))["sessions"]
    _finish(alice, sessions[0])
    active = alice.ok(
        alice.post("/api/v1/sessions/search", {"statuses": [{"type": "active"}], "limit": 1})
    )
    assert [s["session_id"] for s in active["sessions"]] == [sessions[2]]
    following = alice.ok(
        alice.post(
            "/api/v1/sessions/search",
            {"statuses": [{"type": "active"}], "limit": 1, "cursor": active["next_cursor"]},
        )
    )
    assert [s["session_id"] for s in following["sessions"]] == [sessions[1]]
    finished = alice.ok(
        alice.post(
            "/api/v1/sessions/search",
            {"statuses": [{"type": "client_finished", "reasons": ["success"]}]},
        )
    )
    assert [s["session_id"] for s in finished["sessions"]] == [sessions[0]]
    for bad in ({"limit": 0}, {"statuses": []}, {"user_metadata": {"a": 1}}, {"cursor": {}}):
        assert_error(alice.post("/api/v1/sessions/search", bad), 400, "invalid_argument")


def test_other_users_sessions_are_not_found(alice: Api, bob: Api) -> None:
    session = alice.session()
    assert_error(bob.http.get(f"/api/v1/sessions/{session}"), 404, "not_found")
    assert_error(_finish(bob, session), 404, "not_found")
    assert bob.ok(bob.post("/api/v1/sessions/search", {"session_id": session}))["sessions"] == []
    assert_error(_finish(alice, session, "exploded"), 400, "invalid_argument")
    assert alice.ok(alice.post("/api/v1/client/dynamic_config", {})) == {}


# -- sampling sessions (§11.5) ----------------------------------------------------------------


def test_sampling_sessions_validate_and_samples_fail_at_once(alice: Api, bob: Api) -> None:
    model_id = alice.create_model()
    session = model_id.split(":")[0]
    sampler = alice.save(model_id, "p", sampler=True)["path"]
    body = {"session_id": session, "sampling_session_seq_id": 0, "model_path": sampler}
    created = alice.ok(alice.post("/api/v1/create_sampling_session", body))
    assert created == {
        "type": "create_sampling_session",
        "sampling_session_id": f"{session}:sample:0",
    }
    # The same request again is the same sampling session; another model there is refused.
    assert alice.ok(alice.post("/api/v1/create_sampling_session", body)) == created
    base = {"session_id": session, "sampling_session_seq_id": 0, "base_model": "logits/tiny"}
    assert_error(alice.post("/api/v1/create_sampling_session", base), 400, "invalid_argument")
    base["sampling_session_seq_id"] = 1
    assert alice.ok(alice.post("/api/v1/create_sampling_session", base))
    unknown = {**base, "sampling_session_seq_id": 2, "base_model": "no/such-model"}
    assert_error(alice.post("/api/v1/create_sampling_session", unknown), 404, "not_found")
    # Bob may neither sample from Alice's private checkpoint nor use her sampling session.
    bobs = {"session_id": bob.session(), "sampling_session_seq_id": 0, "model_path": sampler}
    assert_error(bob.post("/api/v1/create_sampling_session", bobs), 404, "not_found")
    assert_error(bob.http.get(f"/api/v1/samplers/{session}:sample:0"), 404, "not_found")
    sample = {"sampling_session_id": f"{session}:sample:0", "seq_id": 0, "num_samples": 1}
    assert_error(bob.post("/api/v1/asample", sample), 404, "not_found")
    started = time.monotonic()
    failed = alice.future_result(alice.ok(alice.post("/api/v1/asample", sample)))
    assert time.monotonic() - started < 30
    assert failed["category"] == "user" and failed["code"] == "sampling_unavailable"


# -- create-via-load and optimizer configs (§11.2, §11.4) -----------------------------------


def test_create_via_load_takes_the_checkpoints_shape(alice: Api, bob: Api) -> None:
    source = alice.create_model(rank=8)
    state = alice.save(source, "s")["path"]
    session = bob.session()
    body = {
        "session_id": session,
        "model_seq_id": 0,
        "path": state,
        "optimizer": True,
        "user_metadata": {"from": "alice"},
    }
    # Private: another user's load fails like a load (not_found).
    failed = bob.future_result(bob.ok(bob.post("/api/v1/load_weights", body)))
    assert failed["code"] == "not_found"
    alice.http.post(f"/api/v1/training_runs/{source}/checkpoints/weights/s/publish")
    loaded = bob.future_result(
        bob.ok(bob.post("/api/v1/load_weights", {**body, "model_seq_id": 1}))
    )
    assert loaded == {"path": state, "model_id": f"{session}:train:1", "type": "load_weights"}
    run = bob.ok(bob.http.get(f"/api/v1/training_runs/{session}:train:1"))
    assert (run["base_model"], run["lora_rank"], run["model_owner"]) == ("logits/tiny", 8, "bob")
    assert run["user_metadata"] == {"from": "alice"}
    wrong_base = {**body, "model_seq_id": 2, "base_model": "Qwen/Qwen3-8B"}
    assert bob.future_result(bob.ok(bob.post("/api/v1/load_weights", wrong_base)))["code"] == (
        "invalid_argument"
    )


def test_optimizer_configs_are_kept_and_unknown_ones_refused(alice: Api) -> None:
    session = alice.session()
    body = {
        "session_id": session,
        "model_seq_id": 0,
        "base_model": "logits/tiny",
        "lora_config": {"rank": 4},
        "optimizer_config": {"type": "dimuon", "version": 1},
    }
    model_id = alice.future_result(alice.ok(alice.post("/api/v1/create_model", body)))["model_id"]
    info = alice.ok(alice.post("/api/v1/get_info", {"model_id": model_id}))
    assert info["optimizer_config"] == {"type": "dimuon", "version": 1}
    state = alice.save(model_id, "s")["path"]
    weights = alice.ok(alice.post("/api/v1/weights_info", {"tinker_path": state}))
    assert weights["optimizer_config"] == {"type": "dimuon", "version": 1}
    for bad in ({"type": "sgd"}, {"type": "dimuon", "version": 7}, "adamw", {"kind": "adamw"}):
        answer = alice.post(
            "/api/v1/create_model", {**body, "model_seq_id": 1, "optimizer_config": bad}
        )
        assert_error(answer, 400, "invalid_argument")
    # Restoring Dimuon state into an Adam run is refused, not silently converted.
    load = {
        "session_id": session,
        "model_seq_id": 2,
        "path": state,
        "optimizer": True,
        "optimizer_config": {"type": "adamw"},
    }
    assert alice.future_result(alice.ok(alice.post("/api/v1/load_weights", load)))["code"] == (
        "invalid_argument"
    )


def test_user_metadata_on_saves_is_listed(alice: Api) -> None:
    model_id = alice.create_model()
    alice.save(model_id, "s", user_metadata={"step": "10"})
    assert alice.checkpoint(model_id, "weights/s")["user_metadata"] == {"step": "10"}
    bad = alice.post(
        "/api/v1/save_weights", {"model_id": model_id, "path": "t", "user_metadata": {"n": 1}}
    )
    assert_error(bad, 400, "invalid_argument")


# -- exports and per-file URLs (§11.3) -------------------------------------------------------


def test_export_files_and_their_urls(alice: Api, bob: Api, live_server) -> None:
    model_id = alice.create_model()
    result = _export(alice, model_id, "e", ttl_seconds=3600)
    assert result["path"] == f"logits://{model_id}/external_weights/e"
    assert result["size_bytes"] > 0 and result["type"] == "save_weights_external"
    listed = alice.ok(alice.http.get(f"/api/v1/training_runs/{model_id}/checkpoints", headers=V038))
    [row] = [c for c in listed["checkpoints"] if c["checkpoint_id"] == "external_weights/e"]
    assert row["checkpoint_type"] == "external" and row["sha256"] is None
    assert row["size_bytes"] == result["size_bytes"] and row["expires_at"] is not None
    urls = alice.ok(_urls(alice, model_id, "e"))
    assert sorted(urls["urls"]) == ["adapter_config.json", "adapter_model.safetensors"]
    config_url = urls["urls"]["adapter_config.json"]
    plain = httpx.get(config_url)  # the token is the credential: no key
    assert plain.status_code == 200
    digest = hashlib.sha256(plain.content).digest()
    assert plain.headers["etag"] == f'"sha256:{digest.hex()}"'
    assert plain.headers["repr-digest"] == f"sha-256=:{base64.b64encode(digest).decode()}:"
    assert json.loads(plain.content)["peft_type"] == "LORA"
    head = httpx.head(config_url)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(plain.content)
    part = httpx.get(config_url, headers={"Range": "bytes=-5"})
    assert part.status_code == 206 and part.content == plain.content[-5:]
    assert part.headers["repr-digest"] == plain.headers["repr-digest"]
    # An export has no archive.
    archive = f"/api/v1/training_runs/{model_id}/checkpoints/external_weights/e/archive"
    assert_error(alice.http.get(archive), 404, "not_found")
    # Bob sees none of it while it is private.
    assert_error(_urls(bob, model_id, "e"), 404, "not_found")
    # A deleted export's URLs stop working and its files are reclaimed.
    delete = alice.http.delete(f"/api/v1/training_runs/{model_id}/checkpoints/external_weights/e")
    assert delete.status_code == 204
    assert_error(httpx.get(config_url), 404, "not_found")
    assert list((live_server.store.root / "exports").iterdir()) == []


def test_export_requests_are_validated(alice: Api, bob: Api) -> None:
    model_id = alice.create_model()
    for body in (
        {"model_id": model_id},
        {"model_id": model_id, "path": "../x"},
        {"model_id": model_id, "path": "e", "ttl_seconds": 0},
        {"model_id": model_id, "path": "e", "age_encryption_recipients": ["not-a-key"]},
        {"model_id": model_id, "path": "e", "age_encryption_recipients": "age1x"},
    ):
        assert_error(alice.post("/api/v1/save_weights_external", body), 400, "invalid_argument")
    other = bob.post("/api/v1/save_weights_external", {"model_id": model_id, "path": "e"})
    assert_error(other, 404, "not_found")
    assert (
        alice.ok(alice.http.get(f"/api/v1/training_runs/{model_id}/checkpoints"))["checkpoints"]
        == []
    )


def test_encrypted_export_decrypts_to_the_plain_files(alice: Api) -> None:
    model_id = alice.create_model()
    identity = pyrage.x25519.Identity.generate()
    _export(alice, model_id, "plain")
    _export(alice, model_id, "sealed", age_encryption_recipients=[str(identity.to_public())])
    plain = alice.ok(_urls(alice, model_id, "plain"))["urls"]
    sealed = alice.ok(_urls(alice, model_id, "sealed"))["urls"]
    assert sorted(sealed) == [f"{name}.age" for name in sorted(plain)]
    for name, url in plain.items():
        encrypted = httpx.get(sealed[f"{name}.age"]).content
        assert encrypted != httpx.get(url).content
        assert pyrage.decrypt(encrypted, [identity]) == httpx.get(url).content


def test_clients_without_sdk_version_do_not_see_exports(alice: Api) -> None:
    model_id = alice.create_model()
    alice.save(model_id, "s")
    _export(alice, model_id, "e")
    bare = alice.ok(alice.http.get(f"/api/v1/training_runs/{model_id}/checkpoints"))
    assert [c["checkpoint_id"] for c in bare["checkpoints"]] == ["weights/s"]
    mine = alice.ok(alice.http.get("/api/v1/checkpoints"))
    assert [c["checkpoint_id"] for c in mine["checkpoints"]] == ["weights/s"]
    assert mine["cursor"]["total_count"] == 1
    full = alice.ok(alice.http.get("/api/v1/checkpoints", headers=V038))
    assert sorted(c["checkpoint_id"] for c in full["checkpoints"]) == [
        "external_weights/e",
        "weights/s",
    ]
    assert full["cursor"]["total_count"] == 2


# -- copies (§11.4) ----------------------------------------------------------------------------


def test_copy_weights_is_direct_idempotent_and_owner_checked(alice: Api, bob: Api) -> None:
    model_id = alice.create_model()
    state = alice.save(model_id, "s")["path"]
    key = {"X-Idempotency-Key": "copy-1"}
    first = alice.ok(alice.post("/api/v1/copy_weights", {"source_path": state}, headers=key))
    again = alice.post("/api/v1/copy_weights", {"source_path": state}, headers=key)
    assert again.json() == first and again.headers["idempotent-replayed"] == "true"
    copy_run = first["tinker_path"].split("/")[2]
    assert first["tinker_path"] == f"logits://{copy_run}/weights/s" and copy_run != model_id
    listed = alice.ok(alice.http.get(f"/api/v1/training_runs/{copy_run}/checkpoints"))
    assert [c["checkpoint_id"] for c in listed["checkpoints"]] == ["weights/s"]
    # Into a session slot of the caller's, which then holds it; a second copy there is refused.
    session = alice.session()
    into = {"source_path": state, "session_id": session, "model_seq_id": 0}
    assert alice.ok(alice.post("/api/v1/copy_weights", into))["tinker_path"] == (
        f"logits://{session}:train:0/weights/s"
    )
    assert_error(alice.post("/api/v1/copy_weights", into), 400, "invalid_argument")
    assert_error(bob.post("/api/v1/copy_weights", {"source_path": state}), 404, "not_found")
    into_alice = {"source_path": state, "session_id": session, "model_seq_id": 1}
    assert_error(bob.post("/api/v1/copy_weights", into_alice), 404, "not_found")
    assert_error(
        alice.post("/api/v1/copy_weights", {"source_path": "nope"}), 400, "invalid_argument"
    )


# -- generations (§11, --downloads) -------------------------------------------------------


@pytest.mark.parametrize("downloads", ["archive", "files"])
def test_one_generation_only(server_factory, downloads: str) -> None:
    server = server_factory(downloads=downloads)
    api = Api(server, server.api_key("alice"))
    model_id = api.create_model()
    api.save(model_id, "s")
    archive = api.http.get(f"/api/v1/training_runs/{model_id}/checkpoints/weights/s/archive")
    export = api.post("/api/v1/save_weights_external", {"model_id": model_id, "path": "e"})
    if downloads == "archive":
        assert archive.status_code == 302
        assert_error(export, 404, "not_found")
        assert_error(_urls(api, model_id, "e"), 404, "not_found")
    else:
        assert_error(archive, 404, "not_found")
        assert api.future_result(api.ok(export))["path"].endswith("/external_weights/e")
        assert api.ok(_urls(api, model_id, "e"))["urls"]
    api.http.close()
