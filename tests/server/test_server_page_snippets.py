"""The service page's snippets on saving, loading and exporting, run unmodified (placeholders
filled in) with the official SDK 0.24.0 as ``import tinker as logits``, on the page's model."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

SNIPPETS = Path(__file__).with_name("page_snippets.py")
SDK024 = os.environ.get("LOGITS_SDK_PYTHON")
pytestmark = [
    pytest.mark.sdk,
    pytest.mark.slow,
    pytest.mark.skipif(not SDK024, reason="LOGITS_SDK_PYTHON (the SDK 0.24.0 venv) is not set"),
]


def _snippets(server, base_model: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TINKER_BASE_URL": server.base_url,
        "TINKER_API_KEY": server.api_key("alice"),
        "TINKER_TELEMETRY": "0",
    }
    return subprocess.run(
        [SDK024, str(SNIPPETS), base_model], env=env, capture_output=True, text=True, timeout=600
    )


def test_page_snippets_on_qwen3_5_4b(server_factory) -> None:
    server = server_factory(uri_scheme="tinker", future_poll_hold=2)
    result = _snippets(server, "Qwen/Qwen3.5-4B")
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout)
    run_id = out["sampling_path"].split("/")[2]
    assert out["sampling_path"] == f"tinker://{run_id}/sampler_weights/0000"
    assert out["resume_path"] == f"tinker://{run_id}/weights/0010"
    assert out["shortcut"] == "SamplingClient"
    assert out["archive_members"] == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "checkpoint_complete",
    ]
    forked = server.store.get_run("alice", out["from_state"])
    assert (forked.base_model, forked.lora_rank) == ("Qwen/Qwen3.5-4B", 32)


def test_page_claim_about_logits_paths_does_not_hold_for_the_sdk(server_factory) -> None:
    # The page says logits:// paths "can be loaded later by a new ServiceClient"; the SDK
    # refuses them before sending anything, so SDK users need a server with uri_scheme=tinker.
    server = server_factory(future_poll_hold=2)
    result = _snippets(server, "logits/tiny")
    assert result.returncode != 0
    assert "model_path must start with 'tinker://'" in result.stderr
