"""Runs and checkpoints over REST: listing, pagination, visibility, mutations, archive URLs."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx
import pytest
from server_helpers import Api, assert_error

# Runs on SQLite + local directory and on PostgreSQL (tests/conftest.py).
TEAM_BACKENDS = True

CHECKPOINT_FIELDS = {
    "checkpoint_id",
    "checkpoint_type",
    "time",
    "tinker_path",
    "size_bytes",
    "public",
    "expires_at",
    "sha256",
    "user_metadata",  # docs/protocol.md §11.4
}


def _runs(api: Api, **params) -> httpx.Response:
    return api.http.get("/api/v1/training_runs", params=params)


def test_run_listing_pagination(alice: Api) -> None:
    session = alice.session()
    created = [alice.create_model(session=session, seq=seq) for seq in range(3)]
    everything = alice.ok(_runs(alice))
    assert everything["cursor"] == {"offset": 0, "limit": 20, "total_count": 3}
    assert [r["training_run_id"] for r in everything["training_runs"]] == created[::-1]
    page = alice.ok(_runs(alice, limit=2, offset=1))
    assert page["cursor"] == {"offset": 1, "limit": 2, "total_count": 3}
    assert [r["training_run_id"] for r in page["training_runs"]] == created[::-1][1:3]
    past_end = alice.ok(_runs(alice, offset=10))
    assert past_end == {
        "training_runs": [],
        "cursor": {"offset": 10, "limit": 20, "total_count": 3},
    }
    assert alice.ok(_runs(alice, limit=5000))["cursor"]["limit"] == 100
    assert alice.ok(_runs(alice, project_id="ignored"))["cursor"]["total_count"] == 3
    for params in (
        {"limit": 0},
        {"limit": -1},
        {"limit": "ten"},
        {"limit": "1.5"},
        {"offset": -1},
        {"offset": ""},
        {"access_scope": "everything"},
    ):
        assert_error(_runs(alice, **params), 400, "invalid_argument")


def test_user_checkpoint_listing_pagination(alice: Api) -> None:
    model_id = alice.create_model()
    for name in ("a", "b", "c"):
        alice.save(model_id, name)
    listed = alice.ok(alice.http.get("/api/v1/checkpoints"))
    assert listed["cursor"] == {"offset": 0, "limit": 100, "total_count": 3}
    assert [c["checkpoint_id"] for c in listed["checkpoints"]] == [
        "weights/c",
        "weights/b",
        "weights/a",
    ]
    assert set(listed["checkpoints"][0]) == CHECKPOINT_FIELDS
    page = alice.ok(alice.http.get("/api/v1/checkpoints", params={"limit": 1, "offset": 2}))
    assert [c["checkpoint_id"] for c in page["checkpoints"]] == ["weights/a"]
    clamped = alice.ok(alice.http.get("/api/v1/checkpoints", params={"limit": 99999}))
    assert clamped["cursor"]["limit"] == 1000
    empty = alice.ok(alice.http.get("/api/v1/checkpoints", params={"offset": 3}))
    assert empty["checkpoints"] == [] and empty["cursor"]["total_count"] == 3
    for params in ({"limit": 0}, {"offset": -5}, {"limit": "x"}):
        assert_error(alice.http.get("/api/v1/checkpoints", params=params), 400, "invalid_argument")


def test_run_answer_and_checkpoint_list_shape(alice: Api) -> None:
    model_id = alice.create_model()
    alice.save(model_id, "w")
    alice.save(model_id, "s", sampler=True)
    run = alice.ok(alice.http.get(f"/api/v1/training_runs/{model_id}"))
    assert run["last_checkpoint"]["checkpoint_id"] == "weights/w"
    assert run["last_sampler_checkpoint"]["checkpoint_id"] == "sampler_weights/s"
    assert run["model_owner"] == "alice" and run["is_lora"] is True
    listed = alice.ok(alice.http.get(f"/api/v1/training_runs/{model_id}/checkpoints"))
    assert listed["cursor"] is None
    assert [c["checkpoint_id"] for c in listed["checkpoints"]] == ["sampler_weights/s", "weights/w"]
    # The run id's ':' may arrive percent-encoded.
    encoded = model_id.replace(":", "%3A")
    assert (
        alice.ok(alice.http.get(f"/api/v1/training_runs/{encoded}"))["training_run_id"] == model_id
    )


def _visibility(api: Api, model_id: str, checkpoint_id: str) -> dict[str, int]:
    base = f"/api/v1/training_runs/{model_id}"
    path = f"{base}/checkpoints/{checkpoint_id}"
    return {
        "get_owned": api.http.get(base).status_code,
        "get_accessible": api.http.get(base, params={"access_scope": "accessible"}).status_code,
        "list": api.http.get(f"{base}/checkpoints").status_code,
        "archive": api.http.get(f"{path}/archive", params={"format": "json"}).status_code,
        "weights_info": api.post(
            "/api/v1/weights_info", {"tinker_path": f"logits://{model_id}/{checkpoint_id}"}
        ).status_code,
    }


def test_visibility_matrix(alice: Api, bob: Api, anonymous: Api) -> None:
    model_id = alice.create_model()
    alice.save(model_id, "private")
    alice.save(model_id, "shared", sampler=True)
    everything_ok = dict.fromkeys(
        ("get_owned", "get_accessible", "list", "archive", "weights_info"), 200
    )
    assert _visibility(alice, model_id, "weights/private") == everything_ok
    hidden = dict.fromkeys(everything_ok, 404)
    assert _visibility(bob, model_id, "sampler_weights/shared") == hidden
    assert _visibility(anonymous, model_id, "sampler_weights/shared") == dict.fromkeys(
        everything_ok, 401
    )
    publish = f"/api/v1/training_runs/{model_id}/checkpoints/sampler_weights/shared/publish"
    assert alice.post(publish).status_code == 204
    assert _visibility(bob, model_id, "sampler_weights/shared") == {
        "get_owned": 404,
        "get_accessible": 200,
        "list": 200,
        "archive": 200,
        "weights_info": 200,
    }
    assert _visibility(bob, model_id, "weights/private")["archive"] == 404
    assert _visibility(bob, model_id, "weights/private")["weights_info"] == 404
    bobs_view = bob.ok(bob.http.get(f"/api/v1/training_runs/{model_id}/checkpoints"))
    assert [c["checkpoint_id"] for c in bobs_view["checkpoints"]] == ["sampler_weights/shared"]
    run = bob.ok(
        bob.http.get(f"/api/v1/training_runs/{model_id}", params={"access_scope": "accessible"})
    )
    assert run["last_checkpoint"] is None
    assert run["last_sampler_checkpoint"]["checkpoint_id"] == "sampler_weights/shared"
    accessible = bob.ok(_runs(bob, access_scope="accessible"))
    assert [r["training_run_id"] for r in accessible["training_runs"]] == [model_id]
    assert bob.ok(_runs(bob))["cursor"]["total_count"] == 0
    assert bob.ok(bob.http.get("/api/v1/checkpoints"))["cursor"]["total_count"] == 0

    # Mutations by a non-owner are 404 even on a public checkpoint, and change nothing.
    shared = f"/api/v1/training_runs/{model_id}/checkpoints/sampler_weights/shared"
    for response in (
        bob.http.delete(shared),
        bob.http.post(f"{shared}/publish"),
        bob.http.delete(f"{shared}/publish"),
        bob.http.put(f"{shared}/ttl", json={"ttl_seconds": 60}),
    ):
        assert_error(response, 404, "not_found")
    for response in (
        anonymous.http.delete(shared),
        anonymous.http.post(f"{shared}/publish"),
        anonymous.http.put(f"{shared}/ttl", json={"ttl_seconds": 60}),
    ):
        assert_error(response, 401, "unauthenticated")
    after = alice.checkpoint(model_id, "sampler_weights/shared")
    assert after["public"] is True and after["expires_at"] is None
    # Bob may load the public checkpoint into his own run, not the private one.
    bobs = bob.create_model()
    for checkpoint_id, expected in (
        ("sampler_weights/shared", None),
        ("weights/private", "not_found"),
    ):
        body = {
            "model_id": bobs,
            "path": f"logits://{model_id}/{checkpoint_id}",
            "optimizer": False,
        }
        result = bob.future_result(bob.ok(bob.post("/api/v1/load_weights", body)))
        assert result.get("code") == expected


def test_publish_and_unpublish_are_idempotent(alice: Api, bob: Api) -> None:
    """A second publish (or unpublish) answers 204 as the first: both SDKs retry a 409 here
    for five minutes whatever x-should-retry says (protocol §5.6.5, Appendix A, A31)."""
    model_id = alice.create_model()
    alice.save(model_id, "p")
    publish = f"/api/v1/training_runs/{model_id}/checkpoints/weights/p/publish"
    # The SDK sends body-less calls with a JSON content type and an empty body.
    json_empty = {"Content-Type": "application/json"}
    for _ in range(2):
        response = alice.http.post(publish, headers=json_empty)
        assert response.status_code == 204 and response.content == b""
        assert alice.checkpoint(model_id, "weights/p")["public"] is True
    # Someone else's public checkpoint is still not theirs to publish.
    assert_error(bob.http.post(publish, headers=json_empty), 404, "not_found")
    for _ in range(2):
        response = alice.http.delete(publish, headers=json_empty)
        assert response.status_code == 204 and response.content == b""
        assert alice.checkpoint(model_id, "weights/p")["public"] is False


def test_ttl_set_remove_and_validation(alice: Api) -> None:
    model_id = alice.create_model()
    alice.save(model_id, "t")
    ttl = f"/api/v1/training_runs/{model_id}/checkpoints/weights/t/ttl"
    before = datetime.now(UTC)
    assert alice.http.put(ttl, json={"ttl_seconds": 7200}).status_code == 204
    expires = datetime.fromisoformat(alice.checkpoint(model_id, "weights/t")["expires_at"])
    assert 7100 < (expires - before).total_seconds() < 7300
    assert alice.http.put(ttl, json={"ttl_seconds": None}).status_code == 204
    assert alice.checkpoint(model_id, "weights/t")["expires_at"] is None
    for body in (
        {},
        {"ttl_seconds": 0},
        {"ttl_seconds": -5},
        {"ttl_seconds": True},
        {"ttl_seconds": 1.5},
        {"ttl_seconds": "60"},
        {"ttl_seconds": 315_360_001},
    ):
        assert_error(alice.http.put(ttl, json=body), 400, "invalid_argument")
    assert_error(alice.http.put(ttl, content=b""), 400, "invalid_argument")
    missing = f"/api/v1/training_runs/{model_id}/checkpoints/weights/none/ttl"
    assert_error(alice.http.put(missing, json={"ttl_seconds": 5}), 404, "not_found")


def test_short_ttl_expiry_hides_the_checkpoint(alice: Api, live_server) -> None:
    model_id = alice.create_model()
    alice.save(model_id, "gone")
    ttl = f"/api/v1/training_runs/{model_id}/checkpoints/weights/gone/ttl"
    assert alice.http.put(ttl, json={"ttl_seconds": 1}).status_code == 204
    listed = alice.ok(alice.http.get(f"/api/v1/training_runs/{model_id}/checkpoints"))
    while listed["checkpoints"]:  # expiry is a store-clock matter; wait it out, do not guess
        listed = alice.ok(alice.http.get(f"/api/v1/training_runs/{model_id}/checkpoints"))
    assert_error(alice.http.put(ttl, json={"ttl_seconds": 5}), 404, "not_found")


def test_delete(alice: Api) -> None:
    model_id = alice.create_model()
    alice.save(model_id, "d")
    url = alice.archive_url(model_id, "weights/d")
    path = f"/api/v1/training_runs/{model_id}/checkpoints/weights/d"
    response = alice.http.delete(path)
    assert response.status_code == 204 and response.content == b""
    assert alice.ok(alice.http.get(f"/api/v1/training_runs/{model_id}"))["last_checkpoint"] is None
    assert_error(alice.http.delete(path), 404, "not_found")
    if alice.server.settings.blobs is None:
        assert_error(httpx.get(url), 404, "not_found")
    else:  # the object itself is gone from the store
        assert httpx.get(url).status_code == 404


@pytest.mark.parametrize(
    "suffix",
    ["weights/..x", "weights/.hidden", "bogus/name", "weights/" + "n" * 129, "weights/a%20b"],
)
def test_bad_kind_or_name_in_path_is_400(shared_alice: Api, suffix: str) -> None:
    base = "/api/v1/training_runs/r:train:0/checkpoints/" + suffix
    for response in (
        shared_alice.http.delete(base),
        shared_alice.http.get(base + "/archive"),
        shared_alice.http.post(base + "/publish"),
        shared_alice.http.put(base + "/ttl", json={"ttl_seconds": 5}),
    ):
        assert_error(response, 400, "invalid_argument")


def test_archive_redirect_and_json_forms(alice: Api) -> None:
    model_id = alice.create_model()
    alice.save(model_id, "arc")
    path = f"/api/v1/training_runs/{model_id}/checkpoints/weights/arc/archive"
    redirect = alice.http.get(path, follow_redirects=False)
    assert redirect.status_code == 302
    location = redirect.headers["location"]
    # Our own signed blob URL, or with blobs in an object store, its presigned GET URL.
    assert location.startswith(f"{alice.server.base_url}/api/v1/blobs/") or (
        alice.server.settings.blobs is not None and "/blobs/" in location
    )
    assert redirect.headers["cache-control"] == "no-store"
    expires = parsedate_to_datetime(redirect.headers["expires"])
    assert redirect.json()["url"] == location
    assert datetime.fromisoformat(redirect.json()["expires"]) == expires
    assert 800 < (expires - datetime.now(UTC)).total_seconds() <= 900
    as_json = alice.http.get(path, params={"format": "json"})
    assert as_json.status_code == 200 and set(as_json.json()) == {"url", "expires"}
    assert as_json.json()["expires"].endswith("Z")
    # Other format values are ignored.
    assert alice.http.get(path, params={"format": "xml"}).status_code == 302
    assert_error(
        alice.http.get(f"/api/v1/training_runs/{model_id}/checkpoints/weights/none/archive"),
        404,
        "not_found",
    )


def test_archive_url_uses_host_public_url_and_root_path(server_factory, store_backend) -> None:
    if store_backend != "sqlite":
        pytest.skip("with blobs in an object store, download URLs are its presigned URLs")
    server = server_factory(root_path="/services/logits")
    api = Api(server, server.api_key("alice"))
    assert urlsplit(server.base_url).path == "/services/logits"
    # Behind a proxy that strips the prefix, requests arrive without it.
    stripped = httpx.get(f"http://127.0.0.1:{server.port}/api/v1/healthz")
    assert stripped.json() == {"status": "ok"}
    model_id = api.create_model()
    api.save(model_id, "r")
    url = api.archive_url(model_id, "weights/r")
    assert url.startswith(f"{server.base_url}/api/v1/blobs/")
    assert httpx.get(url).status_code == 200
    via_host = api.http.get(
        f"/api/v1/training_runs/{model_id}/checkpoints/weights/r/archive",
        params={"format": "json"},
        headers={"Host": "example.org:8443"},
    )
    assert via_host.json()["url"].startswith(
        "http://example.org:8443/services/logits/api/v1/blobs/"
    )

    public = server_factory(public_url="https://dl.example.org/base/")
    api = Api(public, public.api_key("alice"))
    model_id = api.create_model()
    api.save(model_id, "p")
    assert api.archive_url(model_id, "weights/p").startswith(
        "https://dl.example.org/base/api/v1/blobs/"
    )


def test_delete_run_extension(live_server, alice: Api, bob: Api) -> None:
    """``DELETE training_runs/{id}`` (our extension, protocol §5.5): owner only, refused
    while a checkpoint or a pending request is left, then the run is gone everywhere."""
    model_id = alice.create_model()
    alice.save(model_id, "p")
    run = f"/api/v1/training_runs/{model_id}"
    assert_error(bob.http.delete(run, params={"with_checkpoints": "true"}), 404, "not_found")
    assert_error(alice.http.delete(run), 409, "not_empty")
    assert_error(
        alice.http.delete(run, params={"with_checkpoints": "yes"}), 400, "invalid_argument"
    )
    store = live_server.store
    state = store.state_dir(model_id)
    assert state.is_dir()
    request_id, _ = store.create_future("alice", operation="save_weights", model_id=model_id)
    pending = alice.http.delete(run, params={"with_checkpoints": "true"})
    assert_error(pending, 409, "already_exists")
    assert "still running" in pending.json()["detail"]
    store.finish_future(request_id, result={"type": "save_weights", "path": "x"}, failed=False)
    response = alice.http.delete(run, params={"with_checkpoints": "true"})
    assert response.status_code == 204 and response.content == b""
    assert_error(alice.http.get(run), 404, "not_found")
    assert_error(alice.http.get(f"{run}/checkpoints"), 404, "not_found")
    assert alice.http.get("/api/v1/checkpoints").json()["checkpoints"] == []
    assert_error(alice.http.delete(run), 404, "not_found")
    assert not state.exists()
