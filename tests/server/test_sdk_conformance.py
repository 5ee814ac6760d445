"""The official tinker SDK 0.24.0, unmodified, against a live server (docs/protocol.md §10.1).

The SDK lives in its own virtualenv: ``$LOGITS_SDK_PYTHON`` (CI) or /tmp/tinkervenv locally.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from pathlib import Path

import pytest

from logits_cli import models

# Runs on SQLite + local directory and on PostgreSQL + S3 (tests/conftest.py).
TEAM_BACKENDS = True

DRIVER = Path(__file__).with_name("sdk_driver.py")


def _sdk_python() -> Path | None:
    for candidate in (os.environ.get("LOGITS_SDK_PYTHON"), "/tmp/tinkervenv/bin/python"):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    return None


SDK_PYTHON = _sdk_python()
pytestmark = [
    pytest.mark.sdk,
    pytest.mark.slow,
    pytest.mark.skipif(SDK_PYTHON is None, reason="the tinker SDK virtualenv is not installed"),
]


@pytest.fixture(params=[False, True], ids=["api-key", "jwt"])
def sdk_server(server_factory, request):
    server = server_factory(uri_scheme="tinker", future_poll_hold=2, jwt_auth=request.param)
    env = {
        **os.environ,
        "TINKER_BASE_URL": server.base_url,
        "TINKER_API_KEY": server.api_key("alice"),
        "TINKER_TELEMETRY": "0",
    }
    return server, env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_sdk_training_and_rest_clients(sdk_server, caplog: pytest.LogCaptureFixture) -> None:
    server, env = sdk_server
    with caplog.at_level(logging.INFO, logger="logits.server.access"):
        out = json.loads(_run([str(SDK_PYTHON), str(DRIVER)], env).stdout)
    # With jwt_auth the SDK exchanges its key for a JWT first (§2.3).
    assert ('"POST /api/v1/auth/token" 200' in caplog.text) == server.settings.jwt_auth
    store = server.store
    model_id = out["model_id"]
    assert out["capabilities"] == [name for name, _ in store.known_base_models()]
    assert out["info_model_name"] == "logits/tiny"
    state = f"tinker://{model_id}/weights/sdk-state"
    sampler = f"tinker://{model_id}/sampler_weights/sdk-sampler"
    assert out["state_path"] == state
    assert out["sampler_path"] == sampler
    assert out["load_path"] == out["load_optimizer_path"] == state
    # A name conflict reaches the SDK user as a failed request, not after minutes of retries.
    assert out["duplicate_save"].startswith("RequestFailedError")
    assert "already exists" in out["duplicate_save"]

    resumed = store.get_run("alice", out["resumed_model_id"])
    assert resumed.base_model == "logits/tiny" and resumed.lora_rank == 4
    runs, total = store.list_runs("alice", access_scope="owned", limit=100, offset=0)
    assert out["runs"] == sorted(r.training_run_id for r in runs)
    assert out["runs_total"] == total == 2
    assert out["run"] == {
        "base_model": "logits/tiny",
        "lora_rank": 4,
        "owner": "alice",
        "last_checkpoint": state,
    }
    assert out["checkpoints"] == sorted([state, sampler])
    assert out["user_checkpoints_total"] == 2
    assert out["weights_info"] == {
        "base_model": "logits/tiny",
        "is_lora": True,
        "lora_rank": 4,
        "train_unembed": True,
        "train_mlp": True,
        "train_attn": True,
    }
    checkpoint = store.get_checkpoint("alice", model_id, "weights", "sdk-state")
    # Our blob endpoint's ETag names the sha256; an object store's is its own (an MD5).
    etag = (
        f'"sha256:{checkpoint.sha256}"' if server.settings.blobs is None else out["archive"]["etag"]
    )
    assert re.fullmatch(r'"(sha256:)?[0-9a-f]{32,64}"', etag)
    assert out["archive"] == {"status": 200, "etag": etag, "size": checkpoint.size_bytes}
    assert out["public_after_publish"] == [True]
    # The driver finally set and removed the state's TTL and deleted the sampler checkpoint.
    assert checkpoint.expires_at is None and checkpoint.public is False
    assert out["checkpoints_after_delete"] == [state]
    assert [c.tinker_path for c in store.list_run_checkpoints("alice", model_id)] == [state]


def test_sdk_cli_manages_runs_and_checkpoints(server_factory, tmp_path: Path) -> None:
    """Every `tinker run` and `tinker checkpoint` command docs/protocol.md §10.1 names."""
    server = server_factory(uri_scheme="tinker")
    env = {
        **os.environ,
        "TINKER_BASE_URL": server.base_url,
        "TINKER_API_KEY": server.api_key("alice"),
        "TINKER_TELEMETRY": "0",
    }
    store = server.store
    session = store.create_session(
        "alice", tags=[], user_metadata={}, sdk_version="t", project_id=None
    )
    run_id = store.create_run(
        "alice",
        session_id=session,
        model_seq_id=0,
        base_model="logits/tiny",
        lora_config=models.LoraConfig(rank=2),
        user_metadata=None,
    )
    store.save_checkpoint(
        "alice",
        run_id,
        kind="weights",
        name="cli",
        ttl_seconds=None,
        overwrite=False,
        uri_scheme="tinker",
    )
    path = f"tinker://{run_id}/weights/cli"
    tinker = str(SDK_PYTHON.parent / "tinker")

    def cli(*args: str) -> str:
        return _run([tinker, "--format", "json", *args], env).stdout

    def stored() -> models.Checkpoint:
        return store.get_checkpoint("alice", run_id, "weights", "cli")

    runs = json.loads(cli("run", "list"))
    assert [r["training_run_id"] for r in runs["runs"]] == [run_id]
    info = json.loads(cli("run", "info", run_id))
    assert info["model_owner"] == "alice" and info["last_checkpoint"]["tinker_path"] == path
    listed = json.loads(cli("checkpoint", "list"))
    assert [c["tinker_path"] for c in listed["checkpoints"]] == [path]
    assert json.loads(cli("checkpoint", "info", path))["lora_rank"] == 2

    cli("checkpoint", "publish", path)
    assert stored().public
    cli("checkpoint", "unpublish", path)
    assert not stored().public
    cli("checkpoint", "set-ttl", path, "--ttl", "3600")
    assert stored().expires_at is not None
    cli("checkpoint", "set-ttl", path, "--remove")
    assert stored().expires_at is None

    cli("checkpoint", "download", path, "--output", str(tmp_path))
    extracted = {file.name for file in tmp_path.rglob("*") if file.is_file()}
    assert {"adapter_config.json", "adapter_model.safetensors", "checkpoint_complete"} <= extracted

    cli("checkpoint", "delete", path, "--yes")
    assert store.list_run_checkpoints("alice", run_id) == []
