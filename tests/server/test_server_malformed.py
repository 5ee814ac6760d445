"""Malformed requests get the documented 4xx, never a 500, and change nothing on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from server_helpers import Api, assert_error


def _files(root: Path) -> dict[str, int]:
    """Every file under the store's blob and run directories, with its size."""
    found = {}
    for directory in (root / "blobs", root / "runs"):
        for parent, _, names in os.walk(directory):
            for name in names:
                path = Path(parent, name)
                found[str(path.relative_to(root))] = path.stat().st_size
    return found


@pytest.fixture
def model_id(alice: Api) -> str:
    model_id = alice.create_model()
    alice.save(model_id, "existing")
    return model_id


BAD_NAMES = ["../x", "a/b", "", "n" * 200, ".hidden", "-dash", "sp ace", "ünï", "a?b", 5, None]


def _save_bodies(model_id: str) -> list[tuple[str, bytes | dict]]:
    bodies: list[tuple[str, bytes | dict]] = []
    for endpoint in ("save_weights", "save_weights_for_sampler"):
        url = f"/api/v1/{endpoint}"
        bodies += [(url, {"model_id": model_id, "path": name}) for name in BAD_NAMES]
        bodies += [
            (url, b"{not json"),
            (url, b"[1, 2]"),
            (url, b'"text"'),
            (url, b"\xff\xfe"),
            (url, {"path": "ok"}),
            (url, {"model_id": model_id, "path": "ok", "ttl_seconds": 0}),
            (url, {"model_id": model_id, "path": "ok", "ttl_seconds": "60"}),
            # Beyond ten years: refused up front like PUT …/ttl, not as a failed future.
            (url, {"model_id": model_id, "path": "ok", "ttl_seconds": 315_360_001}),
            (url, {"model_id": model_id, "path": "ok", "ttl_seconds": 10**30}),
            (url, {"model_id": model_id, "path": "ok", "overwrite": "yes"}),
            (url, {"model_id": model_id, "path": "ok", "seq_id": "1"}),
            (url, {"model_id": 7, "path": "ok"}),
        ]
    bodies += [
        ("/api/v1/save_weights", {"model_id": model_id}),
        ("/api/v1/save_weights_for_sampler", {"model_id": model_id}),
        ("/api/v1/load_weights", {"model_id": model_id, "path": "nota/uri", "optimizer": False}),
        (
            "/api/v1/load_weights",
            {"model_id": model_id, "path": f"logits://{model_id}/bogus/x", "optimizer": False},
        ),
        (
            "/api/v1/load_weights",
            {"model_id": model_id, "path": f"Logits://{model_id}/weights/existing", "optimizer": 1},
        ),
        ("/api/v1/load_weights", {"model_id": model_id, "path": f"logits://{model_id}/weights/x"}),
        ("/api/v1/weights_info", {"tinker_path": "logits://r/weights/../x"}),
        ("/api/v1/weights_info", {"tinker_path": "logits://r/unknown/x"}),
        ("/api/v1/weights_info", {}),
        ("/api/v1/get_info", {}),
        ("/api/v1/get_info", b"nope"),
        ("/api/v1/create_session", {"tags": "x", "sdk_version": "x"}),
        ("/api/v1/create_session", {"tags": []}),
        ("/api/v1/session_heartbeat", {}),
        ("/api/v1/retrieve_future", {"request_id": 5}),
        ("/api/v1/create_model", {"session_id": "s", "model_seq_id": "0", "base_model": "b"}),
    ]
    return bodies


def test_malformed_bodies_are_400_and_write_nothing(alice: Api, model_id: str, live_server) -> None:
    before = _files(live_server.store.root)
    listed_before = alice.ok(alice.http.get("/api/v1/checkpoints"))
    for url, body in _save_bodies(model_id):
        if isinstance(body, bytes):
            response = alice.http.post(
                url, content=body, headers={"Content-Type": "application/json"}
            )
        else:
            response = alice.post(url, body)
        assert response.status_code == 400, (url, body, response.text)
        assert_error(response, 400, "invalid_argument")
    assert alice.ok(alice.http.get("/api/v1/checkpoints")) == listed_before
    assert _files(live_server.store.root) == before


def test_unknown_run_is_404_and_writes_nothing(alice: Api, model_id: str, live_server) -> None:
    before = _files(live_server.store.root)
    unknown = model_id[:-1] + "9"
    for url, body in (
        ("/api/v1/save_weights", {"model_id": unknown, "path": "x"}),
        ("/api/v1/save_weights_for_sampler", {"model_id": unknown, "path": "x"}),
        (
            "/api/v1/load_weights",
            {
                "model_id": unknown,
                "path": f"logits://{model_id}/weights/existing",
                "optimizer": True,
            },
        ),
        ("/api/v1/get_info", {"model_id": unknown}),
        ("/api/v1/weights_info", {"tinker_path": f"logits://{unknown}/weights/existing"}),
    ):
        assert_error(alice.post(url, body), 404, "not_found")
    for response in (
        alice.http.get(f"/api/v1/training_runs/{unknown}"),
        alice.http.get(f"/api/v1/training_runs/{unknown}/checkpoints"),
        alice.http.delete(f"/api/v1/training_runs/{unknown}/checkpoints/weights/existing"),
        alice.http.get(f"/api/v1/training_runs/{unknown}/checkpoints/weights/existing/archive"),
    ):
        assert_error(response, 404, "not_found")
    assert _files(live_server.store.root) == before


@pytest.mark.parametrize(
    "path",
    [
        "/checkpoints/unknown/existing",
        "/checkpoints/WEIGHTS/existing",
        "/checkpoints/weights/..x",
        "/checkpoints/weights/" + "n" * 200,
        "/checkpoints/weights/a%20b",
    ],
)
def test_bad_checkpoint_ids_in_rest_paths_are_400(alice: Api, model_id: str, path: str) -> None:
    base = f"/api/v1/training_runs/{model_id}{path}"
    for response in (
        alice.http.delete(base),
        alice.http.get(base + "/archive"),
        alice.http.post(base + "/publish"),
        alice.http.delete(base + "/publish"),
    ):
        assert_error(response, 400, "invalid_argument")


def test_empty_bodies_are_accepted_where_none_is_needed(alice: Api, model_id: str) -> None:
    base = f"/api/v1/training_runs/{model_id}/checkpoints/weights/existing"
    for content_type in ("application/json", "text/plain", None):
        headers = {"Content-Type": content_type} if content_type else {}
        assert alice.http.post(base + "/publish", headers=headers).status_code == 204
        assert alice.http.delete(base + "/publish", headers=headers).status_code == 204
    assert alice.http.post("/api/v1/client/config", content=b"").status_code == 200
    assert alice.http.delete(base, headers={"Content-Type": "application/json"}).status_code == 204
