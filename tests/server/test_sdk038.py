"""The official tinker SDK 0.38.0 and its CLI, unmodified, against a live server (protocol §11).

The SDK lives in its own virtualenv, named by ``$LOGITS_SDK038_PYTHON`` (``.ci/run`` sets it);
without it these tests skip. 0.24.0 (``$LOGITS_SDK_PYTHON``) is used for the cross-version
checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from logits_cli.uri import CheckpointRef

# Runs on SQLite + local directory and on PostgreSQL + S3 (tests/conftest.py).
TEAM_BACKENDS = True
DRIVER = Path(__file__).with_name("sdk038_driver.py")
SDK038 = os.environ.get("LOGITS_SDK038_PYTHON")
SDK024 = os.environ.get("LOGITS_SDK_PYTHON")
pytestmark = [
    pytest.mark.sdk,
    pytest.mark.slow,
    pytest.mark.skipif(not SDK038, reason="LOGITS_SDK038_PYTHON (the SDK 0.38.0 venv) is not set"),
]


def _env(server, user: str) -> dict[str, str]:
    return {
        **os.environ,
        "TINKER_BASE_URL": server.base_url,
        "TINKER_API_KEY": server.api_key(user),
        "TINKER_TELEMETRY": "0",
    }


def _run(args: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, cwd=cwd)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


@pytest.fixture(scope="module")
def flows(tmp_path_factory):
    """One server, the owner's whole 0.38 session, then another user's view of it."""
    from logits_cli.server.serve import start_in_thread
    from logits_cli.server.settings import ServerSettings

    home = tmp_path_factory.mktemp("sdk038")
    settings = ServerSettings(uri_scheme="tinker", future_poll_hold=2, jwt_auth=True)
    with start_in_thread(home, settings) as running:

        class Server:
            base_url = running.base_url
            store = running.store

            @staticmethod
            def api_key(user: str) -> str:
                return running.store.create_api_key(user)

        server = Server()
        owner = json.loads(_run([SDK038, str(DRIVER), "owner"], _env(server, "alice")))
        paths = {
            **{key: owner[key] for key in ("state", "sampler", "external", "copy_state")},
            "copy_external": owner["copy_external"],
            "sampler_id": owner["session"]["sampler_ids"][0],
        }
        other = json.loads(
            _run([SDK038, str(DRIVER), "other", json.dumps(paths)], _env(server, "bob"))
        )
        yield server, owner, other


def test_training_saves_and_create_from_state(flows) -> None:
    server, out, _ = flows
    model_id = out["model_id"]
    assert "Qwen/Qwen3.5-4B" in out["capabilities"] and "logits/tiny" in out["capabilities"]
    assert out["info"] == {"name": "logits/tiny", "optimizer": "adamw"}
    assert out["state"] == f"tinker://{model_id}/weights/s1"
    assert out["sampler"] == f"tinker://{model_id}/sampler_weights/p1"
    # create_training_client_from_state*: create-via-load, new runs of the same session.
    session = out["session_id"]
    assert out["resumed"] == [f"{session}:train:1", f"{session}:train:2"]
    assert out["resumed_info"] == 4
    assert out["dimuon_optimizer"] == "dimuon"
    assert out["weights_info_optimizer"] == "adamw"
    run = server.store.get_run("alice", model_id)
    assert run.user_metadata == {"purpose": "sdk038"}
    assert out["listed_metadata"]["weights/s1"] == {"step": "1"}


def test_exports_and_their_per_file_urls(flows) -> None:
    _, out, _ = flows
    model_id = out["model_id"]
    assert out["external"] == f"tinker://{model_id}/external_weights/e1"
    assert (
        out["duplicate_export"].startswith("RequestFailedError")
        and "already exists" in (out["duplicate_export"])
    )
    assert ["external_weights/e1", "external"] in out["listed"]
    assert out["user_checkpoint_types"] == ["external", "sampler", "training"]
    assert out["url_keys"] == ["adapter_config.json", "adapter_model.safetensors"]
    valid = {
        "peft_type": "LORA",
        "r": 4,
        "base_model": "logits/tiny",
        "tensor_count": out["adapter"]["tensor_count"],
        "ranks": [4],
        "all_lora": True,
    }
    assert out["adapter"] == valid and valid["tensor_count"] > 0
    # §6 properties on a per-file URL.
    assert out["range"]["status"] == 206 and out["range"]["length"] == 10
    assert out["range"]["content_range"].startswith("bytes 0-9/")
    assert out["range"]["etag"].startswith('"sha256:')
    assert out["range"]["repr_digest"].startswith("sha-256=:")
    assert out["range"]["accept_ranges"] == "bytes"
    assert out["if_range_mismatch"] == [200, True]
    assert out["unsatisfiable"][0] == 416 and out["unsatisfiable"][1].startswith("bytes */")
    # age encryption: keys end in .age, and the files decrypt to the same valid adapter.
    assert out["encrypted_keys"] == ["adapter_config.json.age", "adapter_model.safetensors.age"]
    assert out["encrypted_adapter"] == valid
    # publish, TTL and delete work on exports like on any checkpoint.
    assert out["external_public"] == [True]
    assert out["encrypted_expires"] == [True]
    assert "external_weights/e2" not in out["after_delete"]
    assert out["deleted_url"] == "HTTPError: HTTP Error 404: Not Found"


def test_copies_sampling_and_sessions(flows) -> None:
    server, out, _ = flows
    assert out["copy_state"].endswith("/weights/s1") and out["copy_state"] != out["state"]
    assert out["copy_external"].endswith("/external_weights/e1")
    assert out["copy_same_files"] == {
        "adapter_config.json": True,
        "adapter_model.safetensors": True,
    }
    assert out["sampling_base_models"] == ["logits/tiny"] * 3
    # A sample fails at once, with the documented code, and makes up nothing.
    assert out["sample_error"].startswith("RequestFailedError")
    assert "sampling_unavailable" in out["sample_error"]
    assert out["sample_seconds"] < 30
    assert out["missing_sampler"].startswith("NotFoundError")
    assert out["session_id"] in out["sessions"]
    assert out["session"]["training_run_ids"][:3] == [
        out["model_id"],
        *out["resumed"],
    ]
    assert len(out["session"]["sampler_ids"]) == 3
    assert out["search"] == [[out["session_id"], "active"]]
    # `with ServiceClient()` finished the session on the way out.
    row = (
        server.store._db.connection()
        .execute("SELECT finish_reason FROM sessions WHERE id = ?", (out["session_id"],))
        .fetchone()
    )
    assert row == ("success",)


def test_another_users_view(flows) -> None:
    server, _, other = flows
    assert other["private_sampler"].startswith("NotFoundError")
    assert other["private_external_copy"].startswith("NotFoundError")
    assert other["private_sampling"].startswith("NotFoundError")
    assert (
        other["private_load"].startswith("RequestFailedError")
        and "not found" in (other["private_load"])
    )
    # Forking a published checkpoint of another user, reading and copying a public export.
    forked = server.store.get_run("bob", other["forked"])
    assert (forked.model_owner, forked.base_model, forked.lora_rank) == ("bob", "logits/tiny", 4)
    assert other["public_urls"] == ["adapter_config.json", "adapter_model.safetensors"]
    assert other["public_copy"].endswith("/external_weights/e1")
    assert other["delete_public"].startswith("NotFoundError")


@pytest.mark.skipif(not SDK024, reason="LOGITS_SDK_PYTHON (the SDK 0.24.0 venv) is not set")
def test_sdk024_listings_still_parse_after_an_export(flows) -> None:
    server, out, _ = flows
    script = (
        "import json, os, tinker\n"
        "rest = tinker.ServiceClient().create_rest_client()\n"
        f"run = rest.list_checkpoints({out['model_id']!r}).result().checkpoints\n"
        "mine = rest.list_user_checkpoints(limit=1000).result()\n"
        "print(json.dumps({'run': sorted(c.checkpoint_id for c in run),"
        " 'types': sorted({c.checkpoint_type for c in mine.checkpoints}),"
        " 'total': mine.cursor.total_count}))\n"
    )
    env = _env(server, "alice")
    listed = json.loads(_run([SDK024, "-c", script], env))
    assert listed["run"] == ["sampler_weights/p1", "weights/s1"]
    assert listed["types"] == ["sampler", "training"]
    # The hidden rows are not counted either, so 0.24's pager ends where its rows end.
    everything, total = server.store.list_user_checkpoints("alice", limit=1000, offset=0)
    externals = sum(1 for c in everything if c.kind == "external_weights")
    assert externals >= 2
    assert listed["total"] == total - externals


def _adapter_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_sdk038_cli_against_tinker_scheme(server_factory, tmp_path) -> None:
    server = server_factory(uri_scheme="tinker", future_poll_hold=2)
    tinker_cli = str(Path(SDK038).with_name("tinker"))
    env = _env(server, "carol")
    create = (
        "import json, tinker\n"
        "with tinker.ServiceClient() as s:\n"
        "    t = s.create_lora_training_client(base_model='logits/tiny', rank=4).result()\n"
        "    print(json.dumps([t.save_state('w').result().path,"
        " t.save_weights_external('x').result().path]))\n"
    )
    state, external = json.loads(_run([SDK038, "-c", create], env))
    for path in (state, external):
        _run([tinker_cli, "checkpoint", "download", path, "-o", str(tmp_path)], env)
        target = tmp_path / path.removeprefix("tinker://").replace("/", "_")
        assert _adapter_files(target) == ["adapter_config.json", "adapter_model.safetensors"]
        config = json.loads((target / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA" and config["r"] == 4
    # The weights/ download exported through a temporary export, then deleted it.
    listed, _ = server.store.list_user_checkpoints("carol", limit=100, offset=0)
    assert sorted(c.checkpoint_id for c in listed) == ["external_weights/x", "weights/w"]
    models_out = json.loads(_run([tinker_cli, "--format", "json", "model", "list"], env))
    names = json.dumps(models_out)
    assert "logits/tiny" in names and "Qwen/Qwen3.5-4B" in names


def test_cookbook_checkpoint_helpers(server_factory, tmp_path) -> None:
    """tinker-cookbook 0.6.1: rolling and periodic saves, resume from the last checkpoint,
    ``with ServiceClient()`` and its download helper (weights/ and external_weights/)."""
    server = server_factory(uri_scheme="tinker", future_poll_hold=2)
    driver = Path(__file__).with_name("cookbook_driver.py")
    out = json.loads(_run([SDK038, str(driver), str(tmp_path)], _env(server, "dana")))
    model_id = out["model_id"]
    # Periodic saves (every 2 steps) and the final one stay; each rolling save replaced the
    # previous one, and save_final removed the last.
    assert out["checkpoints"] == [
        "sampler_weights/000002",
        "sampler_weights/000004",
        "sampler_weights/final",
        "weights/000002",
        "weights/000004",
        "weights/final",
    ]
    assert out["last"] == {"name": "final", "state_path": f"tinker://{model_id}/weights/final"}
    assert out["resumed"] == 4 and out["closed"] is True
    files = ["adapter_config.json", "adapter_model.safetensors"]
    assert out["weights_download"] == files and out["external_download"] == files
    assert out["adapter"] == ["LORA", 4, "logits/tiny"] and out["same_adapter"] is True
    # The weights/ download exported through a temporary, encrypted export, then deleted it;
    # every session the helpers opened was finished.
    listed, _ = server.store.list_user_checkpoints("dana", limit=100, offset=0)
    assert [c.checkpoint_id for c in listed if c.kind == "external_weights"] == [
        "external_weights/adapter"
    ]
    open_sessions = (
        server.store._db.connection()
        .execute("SELECT count(*) FROM sessions WHERE user_id = 'dana' AND finished IS NULL")
        .fetchone()[0]
    )
    assert open_sessions == 0


def test_sdk_cli_publishes_an_already_public_checkpoint_at_once(server_factory) -> None:
    """Both SDKs retry a 409 for five minutes, whatever x-should-retry says; our server
    answers a second publish (and unpublish) 204, as the service does (protocol §5.6.5,
    Appendix A, A31). Each CLI call is given 60 s: a retried 409 would overrun it."""
    server = server_factory(uri_scheme="tinker", future_poll_hold=2)
    env = _env(server, "dave")
    create = (
        "import tinker\n"
        "with tinker.ServiceClient() as s:\n"
        "    t = s.create_lora_training_client(base_model='logits/tiny', rank=4).result()\n"
        "    print(t.save_state('p').result().path)\n"
    )
    path = _run([SDK038, "-c", create], env).strip()
    ref = CheckpointRef.parse(path)
    sdks = [SDK038] + ([SDK024] if SDK024 else [])
    for python in sdks:
        tinker_cli = str(Path(python).with_name("tinker"))
        for command, public in (("publish", True), ("unpublish", False)):
            for attempt in range(2):
                started = time.monotonic()
                result = subprocess.run(
                    [tinker_cli, "checkpoint", command, path],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert result.returncode == 0, (python, command, attempt, result.stderr[-2000:])
                assert time.monotonic() - started < 30, (python, command, attempt)
                checkpoint = server.store.get_checkpoint("dave", ref.run_id, ref.kind, ref.name)
                assert checkpoint.public is public
