"""Service endpoints, authentication, routing errors (docs/protocol.md §2, §4.4, §5.1)."""

from __future__ import annotations

import httpx
import pytest
from server_helpers import Api, assert_error


def test_healthz_needs_no_key(shared_alice: Api) -> None:
    response = httpx.get(shared_alice.server.base_url + "/api/v1/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["content-type"] == "application/json"


def test_capabilities_list_the_store_base_models(shared_alice: Api) -> None:
    answer = shared_alice.ok(shared_alice.http.get("/api/v1/get_server_capabilities"))
    expected = [
        {"model_name": name, "max_context_length": context, "trainable": True, "sampleable": False}
        for name, context in shared_alice.server.store.known_base_models()
    ]
    assert answer == {"supported_models": expected}
    tiny = {"model_name": "logits/tiny", "max_context_length": 2048}
    assert {**tiny, "trainable": True, "sampleable": False} in expected


def test_client_config_reports_jwt_auth_off(shared_alice: Api) -> None:
    answer = shared_alice.ok(shared_alice.post("/api/v1/client/config", {"sdk_version": "0.24.0"}))
    assert answer == {"pjwt_auth_enabled": False}


def test_auth_token_is_404_when_jwt_auth_is_off(shared_alice: Api) -> None:
    assert_error(shared_alice.post("/api/v1/auth/token", {}), 404, "not_found")


@pytest.mark.parametrize("key", [None, "tml-unknown", "eyJ.not.ajwt"])
def test_missing_or_unknown_keys_are_401(live_server, key: str | None) -> None:
    headers = {"X-API-Key": key} if key else {}
    with httpx.Client(base_url=live_server.base_url, headers=headers) as client:
        for response in (
            client.get("/api/v1/training_runs"),
            client.post("/api/v1/create_session", json={"tags": [], "sdk_version": "x"}),
            client.post("/api/v1/client/config", json={"sdk_version": "x"}),
        ):
            assert_error(response, 401, "unauthenticated")


def test_revoked_key_is_401(live_server) -> None:
    key = live_server.api_key("carol")
    with httpx.Client(base_url=live_server.base_url, headers={"X-API-Key": key}) as client:
        assert client.get("/api/v1/training_runs").status_code == 200
        live_server.store.revoke_api_key(key[:12])
        assert_error(client.get("/api/v1/training_runs"), 401, "unauthenticated")


def test_session_create_and_heartbeat(alice: Api, bob: Api) -> None:
    session_id = alice.session()
    answer = alice.ok(alice.post("/api/v1/session_heartbeat", {"session_id": session_id}))
    assert answer == {"type": "session_heartbeat"}
    assert_error(
        bob.post("/api/v1/session_heartbeat", {"session_id": session_id}), 404, "not_found"
    )
    assert_error(alice.post("/api/v1/session_heartbeat", {"session_id": "nope"}), 404, "not_found")


def test_create_session_answer_has_every_field(alice: Api) -> None:
    answer = alice.ok(
        alice.post(
            "/api/v1/create_session",
            {
                "tags": ["a"],
                "user_metadata": {"k": "v"},
                "sdk_version": "0.24.0",
                "project_id": "p",
            },
        )
    )
    assert set(answer) == {
        "type",
        "session_id",
        "info_message",
        "warning_message",
        "error_message",
    }
    assert answer["type"] == "create_session"


def test_telemetry_accepts_anything_without_a_key(shared_alice: Api) -> None:
    for body in (b"", b"not json", b'{"events": [1, 2]}'):
        response = httpx.post(shared_alice.server.base_url + "/api/v1/telemetry", content=body)
        assert response.status_code == 200
        assert response.json() == {"status": "accepted"}


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/api/v1/nope"),
        ("GET", "/nope"),
        ("GET", "/api/v1/training_runs/"),  # no redirect between slash variants
        ("POST", "/api/v1/forward_backward"),
        ("POST", "/api/v1/optim_step"),
        ("GET", "/api/v1/sessions/abc"),
        ("GET", "/api/v1/samplers/abc"),
        ("GET", "/api/v1/audit"),
        ("GET", "/api/v1/billing/usage"),
    ],
)
def test_unknown_and_unimplemented_endpoints_are_404(
    shared_alice: Api, method: str, path: str
) -> None:
    response = shared_alice.http.request(method, path, follow_redirects=False)
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/api/v1/healthz"),
        ("GET", "/api/v1/create_session"),
        ("DELETE", "/api/v1/training_runs"),
        ("GET", "/api/v1/training_runs/r/checkpoints/weights/n"),
        ("POST", "/api/v1/blobs/token"),
    ],
)
def test_wrong_method_is_405(shared_alice: Api, method: str, path: str) -> None:
    assert_error(shared_alice.http.request(method, path), 405, "method_not_allowed")


def test_jwt_exchange_and_use(server_factory) -> None:
    server = server_factory(jwt_auth=True, jwt_ttl=600)
    key = server.api_key("alice")
    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": key}) as client:
        config = client.post("/api/v1/client/config", json={"sdk_version": "x"})
        assert config.json() == {"pjwt_auth_enabled": True}
        jwt = client.post("/api/v1/auth/token", json={}).json()["jwt"]
        assert jwt.startswith("eyJ")
    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": jwt}) as client:
        session = client.post("/api/v1/create_session", json={"tags": [], "sdk_version": "x"})
        assert session.status_code == 200
        runs = client.get("/api/v1/training_runs").json()
        assert runs["cursor"]["total_count"] == 0
        # A JWT does not mint its successor: only the API key does.
        assert_error(client.post("/api/v1/auth/token", json={}), 401, "unauthenticated")
    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": jwt[:-4] + "AAAA"}) as client:
        assert_error(client.get("/api/v1/training_runs"), 401, "unauthenticated")


def test_auth_off_acts_as_local(server_factory) -> None:
    server = server_factory(auth=False)
    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": "ignored"}) as client:
        session = client.post("/api/v1/create_session", json={"tags": [], "sdk_version": "x"})
        body = {
            "session_id": session.json()["session_id"],
            "model_seq_id": 0,
            "base_model": "logits/tiny",
        }
        handle = client.post("/api/v1/create_model", json=body).json()
        run = client.get(f"/api/v1/training_runs/{handle['model_id']}")
        while run.status_code == 404:  # the worker thread may still be creating it
            client.post("/api/v1/retrieve_future", json={"request_id": handle["request_id"]})
            run = client.get(f"/api/v1/training_runs/{handle['model_id']}")
        assert run.json()["model_owner"] == "local"
