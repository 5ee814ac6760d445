"""``logits models ls``, ``server start --model-config`` and unknown base models, end to end."""

from __future__ import annotations

import json
from pathlib import Path

from logits_cli.store.catalog import default_catalog
from tests.cli.conftest import Cli, invoke

CATALOG = [(shape.name, shape.max_context_length) for shape in default_catalog()]


def expected_json(entries: list[tuple[str, int]]) -> list[dict]:
    return [
        {"model_name": name, "max_context_length": context, "trainable": True, "sampleable": False}
        for name, context in entries
    ]


def test_json_lists_every_catalog_model(cli: Cli) -> None:
    result = cli.ok("models", "ls", "--json")
    assert json.loads(result.stdout) == expected_json(CATALOG)
    assert result.stderr == ""


def test_piped_output_is_tab_separated_rows(cli: Cli) -> None:
    lines = cli.lines("models", "ls")
    assert lines == [f"{name}\t{context}\ttrue\tfalse" for name, context in CATALOG]
    assert "Qwen/Qwen3.5-4B\t262144\ttrue\tfalse" in lines


def test_quiet_and_substring_filter(cli: Cli) -> None:
    assert cli.lines("models", "ls", "-q", "QWEN3.5") == ["Qwen/Qwen3.5-4B", "Qwen/Qwen3.5-35B-A3B"]
    assert cli.lines("models", "ls", "tiny") == ["logits/tiny\t2048\ttrue\tfalse"]
    assert json.loads(cli.ok("models", "ls", "--json", "gpt-oss").stdout) == expected_json(
        [("openai/gpt-oss-20b", 131072), ("openai/gpt-oss-120b", 131072)]
    )


def test_no_match_is_not_found(cli: Cli) -> None:
    result = cli("models", "ls", "no-such-model")
    assert result.exit_code == 4
    assert result.stdout == ""
    assert result.stderr == "Error: no base model name contains 'no-such-model'\n"


def test_unknown_base_model_names_the_closest(cli: Cli) -> None:
    result = cli("runs", "create", "--base-model", "qwen/qwen3.5-4b", "--rank", "2")
    assert result.exit_code == 4  # the failed job says not_found (docs/protocol.md §5.2)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "base model 'qwen/qwen3.5-4b' is not supported by this server; did you mean " in (
        result.stderr
    )
    assert "Qwen/Qwen3.5-4B" in result.stderr.split("did you mean", 1)[1]
    assert "--model-config" in result.stderr
    assert json.loads(cli.ok("runs", "ls", "--json").stdout) == []


def test_a_qwen35_run_is_created_on_the_service_page_model(cli: Cli) -> None:
    run_id = cli.ok("runs", "create", "--base-model", "Qwen/Qwen3.5-4B", "--rank", "1", "-q")
    run = json.loads(cli.ok("runs", "info", run_id.stdout.strip(), "--json").stdout)
    assert (run["base_model"], run["lora_rank"]) == ("Qwen/Qwen3.5-4B", 1)


# -- --model-config ---------------------------------------------------------------------------

OPERATOR_CONFIG = {
    "_name_or_path": "acme/tiny-qwen3",
    "model_type": "qwen3",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "vocab_size": 99,
    "max_position_embeddings": 4096,
}


def test_model_config_adds_models_to_a_server(server_factory, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(OPERATOR_CONFIG))
    server = server_factory(model_configs=(str(path), f"acme/second={path}"))
    monkeypatch.setenv("LOGITS_BASE_URL", server.base_url)
    monkeypatch.setenv("LOGITS_API_KEY", server.api_key("alice"))

    listed = json.loads(invoke(["models", "ls", "--json", "acme/"]).stdout)
    assert listed == expected_json([("acme/tiny-qwen3", 4096), ("acme/second", 4096)])
    created = invoke(["runs", "create", "--base-model", "acme/second", "--rank", "2", "-q"])
    assert created.exit_code == 0, created.stderr
    state = server.store.state_dir(created.stdout.strip())
    config = json.loads((state / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "acme/second"
    assert config["target_modules"] == [
        "down_proj",
        "gate_proj",
        "k_proj",
        "o_proj",
        "q_proj",
        "unembed_tokens",
        "up_proj",
        "v_proj",
    ]


def test_server_start_refuses_a_bad_model_config_before_starting(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text('{"model_type": "llama"}')
    result = invoke(["server", "start", "--port", "0", "--model-config", str(bad)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: model config '{bad}' has no _name_or_path; name it with NAME={bad}\n"
    )
    named = invoke(["server", "start", "--port", "0", "--model-config", f"acme/x={bad}"])
    assert named.exit_code == 2
    assert named.stderr == "Error: config of acme/x has no positive integer 'hidden_size'\n"
    missing = invoke(["server", "start", "--model-config", str(tmp_path / "none.json")])
    assert missing.exit_code == 2
    assert missing.stderr.startswith("Error: cannot read model config ")
