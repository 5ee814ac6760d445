"""`logits runs …`, `logits config show` and `logits server keys …`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.cli.conftest import Cli, invoke

RUN_KEYS = {
    "training_run_id",
    "base_model",
    "model_owner",
    "is_lora",
    "corrupted",
    "lora_rank",
    "last_request_time",
    "last_checkpoint",
    "last_sampler_checkpoint",
    "user_metadata",
}


def test_runs_create_ls_info(cli: Cli) -> None:
    created = json.loads(
        cli.ok("runs", "create", "--base-model", "logits/tiny", "--rank", "2", "--json").stdout
    )
    assert set(created) == RUN_KEYS
    assert (created["base_model"], created["lora_rank"], created["is_lora"]) == (
        "logits/tiny",
        2,
        True,
    )
    run_id = created["training_run_id"]
    assert cli.lines("runs", "ls", "-q") == [run_id]
    listed = json.loads(cli.ok("runs", "ls", "--json").stdout)
    assert [r["training_run_id"] for r in listed] == [run_id]
    saved = json.loads(cli.ok("ckpt", "save", "w", "--run", run_id, "--json").stdout)
    info = json.loads(cli.ok("runs", "info", run_id, "--json").stdout)
    assert info["last_checkpoint"] == saved
    assert info["last_sampler_checkpoint"] is None
    assert cli.lines("runs", "info", run_id, "-q") == [run_id]
    human = dict(line.split("\t", 1) for line in cli.lines("runs", "info", run_id))
    assert human["base model"] == "logits/tiny"
    assert human["latest training"] == saved["tinker_path"]
    assert human["latest sampler"] == ""
    owner = "local" if cli.backend == "embedded" else "alice"
    assert human["owner"] == owner


def test_runs_create_prints_the_id_and_from_checkpoint(cli: Cli) -> None:
    result = cli.ok("runs", "create", "--base-model", "logits/tiny", "--rank", "2")
    (run_id,) = result.stdout.splitlines()
    assert f"export LOGITS_RUN={run_id}" in result.stderr
    path = cli.ok("ckpt", "save", "base", "--run", run_id, "-q").stdout.strip()
    forked = cli.ok(
        "runs", "create", "--base-model", "logits/tiny", "--rank", "2", "--from", path, "-q"
    )
    assert forked.stdout.strip() != run_id


def test_runs_create_from_takes_the_checkpoints_model_and_rank(cli: Cli) -> None:
    run_id = cli.ok("runs", "create", "--base-model", "logits/tiny", "--rank", "3", "-q").stdout
    path = cli.ok("ckpt", "save", "base", "--run", run_id.strip(), "-q").stdout.strip()
    forked = json.loads(cli.ok("runs", "create", "--from", path, "--json").stdout)
    assert (forked["base_model"], forked["lora_rank"]) == ("logits/tiny", 3)

    runs_before = cli.lines("runs", "ls", "-q")
    clash = cli("runs", "create", "--rank", "8", "--from", path)
    assert clash.exit_code == 2
    assert clash.stderr == (
        f"Error: {path} has LoRA rank 3, not 8; leave the option out to use the checkpoint's\n"
    )
    assert cli.lines("runs", "ls", "-q") == runs_before  # nothing created


def test_runs_create_needs_a_model_or_a_checkpoint(cli: Cli) -> None:
    result = cli("runs", "create")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: give --base-model MODEL, or --from PATH to start from a checkpoint\n"
    )


def test_runs_empty(cli: Cli) -> None:
    assert json.loads(cli.ok("runs", "ls", "--json").stdout) == []
    assert cli.ok("runs", "ls", "-q").stdout == ""


def test_runs_info_unknown_is_not_found(cli: Cli) -> None:
    result = cli("runs", "info", "nope")
    assert result.exit_code == 4
    assert result.stderr == "Error: training run nope not found\n"


def test_config_show_masks_the_key(cli: Cli) -> None:
    shown = json.loads(cli.ok("config", "show", "--json").stdout)
    settings = shown["settings"]
    if cli.backend == "embedded":
        assert shown["backend"] == "embedded"
        assert settings["api_key"] == {"value": None, "source": "not set"}
        assert settings["base_url"] == {"value": None, "source": "default (embedded backend)"}
    else:
        assert shown["backend"] == "remote"
        assert shown["store_dir"] is None
        assert settings["base_url"] == {
            "value": cli.server.base_url,
            "source": "env LOGITS_BASE_URL",
        }
        assert settings["api_key"]["source"] == "env LOGITS_API_KEY"
        assert "…" in settings["api_key"]["value"]
    assert settings["home"]["source"] == "env LOGITS_HOME"
    rows = [line.split("\t") for line in cli.lines("config", "show")]
    assert [r[0] for r in rows] == [
        "home",
        "config_file",
        "base_url",
        "profile",
        "api_key",
        "run",
        "debug",
        "backend",
    ]


def test_config_show_never_prints_the_key(live_server, monkeypatch) -> None:
    key = live_server.api_key("alice")
    monkeypatch.setenv("LOGITS_API_KEY", key)
    for args in (["config", "show"], ["config", "show", "--json"]):
        result = invoke(args)
        assert result.exit_code == 0
        assert key not in result.stdout + result.stderr


def test_server_keys_lifecycle(tmp_path: Path) -> None:
    home = str(tmp_path / "srv")
    created = invoke(["server", "keys", "create", "alice", "--home", home])
    assert created.exit_code == 0, created.stderr
    (key,) = created.stdout.splitlines()
    assert key.startswith("tml-")
    assert "shown only now" in created.stderr
    listed = json.loads(invoke(["server", "keys", "ls", "--home", home, "--json"]).stdout)
    assert [(k["prefix"], k["user"], k["revoked"]) for k in listed] == [(key[:12], "alice", False)]
    assert invoke(["server", "keys", "ls", "--home", home, "-q"]).stdout == f"{key[:12]}\n"
    revoked = invoke(["server", "keys", "revoke", key[:12], "--home", home, "--json"])
    assert json.loads(revoked.stdout) == {"prefix": key[:12], "revoked": 1}
    (row,) = invoke(["server", "keys", "ls", "--home", home]).stdout.splitlines()
    assert row.split("\t")[0::3] == [key[:12], "true"]
    assert key not in invoke(["server", "keys", "ls", "--home", home]).stdout


def test_server_keys_home_defaults_to_logits_home(isolated_env: Path) -> None:
    created = invoke(["server", "keys", "create", "bob", "-q"])
    assert created.exit_code == 0
    assert (isolated_env / "store").is_dir()
    assert invoke(["server", "keys", "ls", "-q"]).stdout == created.stdout[:12] + "\n"


def test_server_keys_bad_user_is_usage(tmp_path: Path) -> None:
    result = invoke(["server", "keys", "create", "Not Valid", "--home", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ")


def test_server_start_on_a_taken_port_is_an_error_not_an_auth_failure(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "logits_cli", "server", "start", "--port", str(port)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "LOGITS_HOME": str(tmp_path)},
            timeout=60,
        )
    assert result.returncode == 1  # uvicorn's own 3 would mean "authentication"
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        f"Error: the server could not start on 127.0.0.1:{port}; see the log above"
    )


def test_runs_create_from_an_empty_path_is_refused_not_ignored() -> None:
    result = invoke(["runs", "create", "--base-model", "logits/tiny", "--from", ""])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith("Error: checkpoint path '' ")
    assert invoke(["runs", "ls", "-q"]).stdout == ""  # no run was created
