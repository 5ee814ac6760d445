"""The app in-process (embedded backend) and served mode's extras (access log, TTL sweeper)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from pathlib import Path

import httpx
import pytest
from server_helpers import Api

from logits_cli.server.app import create_app
from logits_cli.server.serve import open_store
from logits_cli.server.settings import EMBEDDED_ORIGIN, ServerSettings


def test_embedded_app_over_asgi_transport(tmp_path) -> None:
    settings = ServerSettings.embedded()
    store = open_store(tmp_path, settings)
    app = create_app(store, settings)
    assert (store.root / "signing_secret").stat().st_size == 32

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=EMBEDDED_ORIGIN) as client:
            session = await client.post(
                "/api/v1/create_session", json={"tags": [], "sdk_version": "x"}
            )
            body = {
                "session_id": session.json()["session_id"],
                "model_seq_id": 0,
                "base_model": "logits/tiny",
            }
            handle = (await client.post("/api/v1/create_model", json=body)).json()
            # Inline futures: finished by the time the handle arrives.
            poll = {"request_id": handle["request_id"]}
            result = (await client.post("/api/v1/retrieve_future", json=poll)).json()
            assert result == {"model_id": handle["model_id"], "type": "create_model"}
            save = {"model_id": handle["model_id"], "path": "e"}
            handle = (await client.post("/api/v1/save_weights", json=save)).json()
            poll = {"request_id": handle["request_id"]}
            result = (await client.post("/api/v1/retrieve_future", json=poll)).json()
            assert result["path"] == f"logits://{body['session_id']}:train:0/weights/e"
            run = (await client.get(f"/api/v1/training_runs/{handle['model_id']}")).json()
            assert run["model_owner"] == "local"
            archive = await client.get(
                f"/api/v1/training_runs/{handle['model_id']}/checkpoints/weights/e/archive",
                params={"format": "json"},
            )
            url = archive.json()["url"]
            assert url.startswith(f"{EMBEDDED_ORIGIN}/api/v1/blobs/")
            ranged = await client.get(url, headers={"Range": "bytes=0-1023"})
            assert ranged.status_code == 206 and len(ranged.content) == 1024
            whole = await client.get(url)
            assert hashlib.sha256(whole.content).hexdigest() == whole.headers["etag"][8:-1]

    asyncio.run(scenario())
    store.close()


def test_access_log_has_one_line_per_request_and_hides_tokens(
    live_server, caplog: pytest.LogCaptureFixture
) -> None:
    api = Api(live_server, live_server.api_key("alice"))
    model_id = api.create_model()
    api.save(model_id, "logged")
    url = api.archive_url(model_id, "weights/logged")
    token = url.rsplit("/", 1)[1]

    def counted() -> list[str]:
        # Lines of earlier requests (the archive URL's, the save's polls) may land late,
        # inside the capture window: only the lines of the two requests made here count.
        lines = [r.getMessage() for r in caplog.records if r.name == "logits.server.access"]
        return [line for line in lines if "/api/v1/blobs/" in line or "/healthz" in line]

    with caplog.at_level(logging.INFO, logger="logits.server.access"):
        assert httpx.get(url).status_code == 200
        assert api.http.get("/api/v1/healthz").status_code == 200
        # A request's line is written once its response is sent, so it may follow the
        # answer by a moment: wait for it (bounded), then count.
        deadline = time.monotonic() + 10
        while len(counted()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    # One line each, in the order the responses finished (not necessarily the requests').
    lines = counted()
    assert len(lines) == 2
    assert sum('"GET /api/v1/blobs/<token>" 200' in line for line in lines) == 1
    assert sum('"GET /api/v1/healthz" 200' in line for line in lines) == 1
    assert token not in caplog.text and api.http.headers["X-API-Key"] not in caplog.text
    api.http.close()


def test_sweeper_reclaims_expired_checkpoints(server_factory) -> None:
    server = server_factory(sweep_interval=0.05)
    api = Api(server, server.api_key("alice"))
    model_id = api.create_model()
    api.save(model_id, "short", ttl_seconds=1)
    sha256 = api.checkpoint(model_id, "weights/short")["sha256"]
    blob = server.store.root / "blobs" / sha256
    assert blob.exists()
    while blob.exists():  # the sweeper removes it once the checkpoint has expired
        time.sleep(0.05)
    assert (
        api.ok(api.http.get(f"/api/v1/training_runs/{model_id}/checkpoints"))["checkpoints"] == []
    )
    api.http.close()


def test_checkpoints_saved_under_another_scheme_are_listed_in_the_configured_one(
    tmp_path: Path,
) -> None:
    """§3.5: a store filled with ``logits://`` (embedded, default server) and then served with
    ``uri_scheme = tinker`` for the official SDK answers every URI as ``tinker://``."""
    embedded = ServerSettings.embedded()
    store = open_store(tmp_path, embedded)
    saved_under_logits = create_app(store, embedded)
    served_for_sdk = create_app(store, dataclasses.replace(embedded, uri_scheme="tinker"))

    async def scenario() -> None:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=saved_under_logits), base_url=EMBEDDED_ORIGIN
        ) as client:
            session = await client.post(
                "/api/v1/create_session", json={"tags": [], "sdk_version": "x"}
            )
            body = {"session_id": session.json()["session_id"], "model_seq_id": 0}
            handle = await client.post(
                "/api/v1/create_model", json={**body, "base_model": "logits/tiny"}
            )
            run_id = handle.json()["model_id"]
            for endpoint in ("save_weights", "save_weights_for_sampler"):
                await client.post(f"/api/v1/{endpoint}", json={"model_id": run_id, "path": "s"})
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=served_for_sdk), base_url=EMBEDDED_ORIGIN
        ) as client:
            expected = {f"tinker://{run_id}/weights/s", f"tinker://{run_id}/sampler_weights/s"}
            per_run = (await client.get(f"/api/v1/training_runs/{run_id}/checkpoints")).json()
            assert {c["tinker_path"] for c in per_run["checkpoints"]} == expected
            per_user = (await client.get("/api/v1/checkpoints")).json()
            assert {c["tinker_path"] for c in per_user["checkpoints"]} == expected
            run = (await client.get(f"/api/v1/training_runs/{run_id}")).json()
            [listed] = (await client.get("/api/v1/training_runs")).json()["training_runs"]
            for answer in (run, listed):
                latest = {
                    answer["last_checkpoint"]["tinker_path"],
                    answer["last_sampler_checkpoint"]["tinker_path"],
                }
                assert latest == expected

    asyncio.run(scenario())
    store.close()
