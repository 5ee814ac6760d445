"""``ckpt export --format peft`` equals tinker-cookbook 0.6.1's ``build_lora_adapter``, name
for name and tensor for tensor, for a tiny base model of every family we serve built by
transformers from a config (no weights downloaded); for the dense families ``peft`` loads
the export with every LoRA parameter filled and the cookbook adapter's logits. torch runs
only in the torch venv (``torch_driver.py``, a subprocess); ``logits`` runs without it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import invoke
from tests.peft.helpers import mark_downloaded

DRIVER = Path(__file__).with_name("torch_driver.py")
FAMILIES = ["llama", "llama_tied", "qwen3", "qwen3_tied", "qwen3_moe", "qwen3_5"]
FAMILIES += ["qwen3_5_vl", "qwen3_5_moe", "gpt_oss"]
# peft's own check: dense families whose unembedding LoRA stays a Linear LoRA (lm_head). The
# tied ones put it on embed_tokens, as the cookbook does, which peft wraps as an Embedding
# LoRA with other parameter names; vLLM reads those keys itself.
PEFT_LOADED = {"llama", "qwen3"}


def driver(torch_python: str, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [torch_python, str(DRIVER), *args], capture_output=True, text=True, timeout=600
    )
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    return dict(json.loads(lines[-1]))


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("family", FAMILIES)
def test_export_equals_the_cookbook_adapter(family: str, torch_python: str, tmp_path: Path) -> None:
    model, raw = tmp_path / "model", tmp_path / "raw"
    made = driver(torch_python, "make", family, str(model), str(raw))
    mark_downloaded(raw)
    ours = tmp_path / "ours"

    result = invoke(["ckpt", "export", str(raw), "-o", str(ours), "--base-config", str(model)])

    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in ours.iterdir()) == [
        ".logits-export.json",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    extra = ["--peft"] if family in PEFT_LOADED else []
    compared = driver(
        torch_python, "compare", str(model), str(raw), str(ours), str(tmp_path / "cb"), *extra
    )
    assert compared["problems"] == [], compared
    assert int(str(compared["tensors"])) >= int(str(made["tensors"]))
    if family in PEFT_LOADED:
        assert compared["peft_loaded"] == compared["tensors"]
        assert compared["adapter_changes_logits"] is True
