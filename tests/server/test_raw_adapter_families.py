"""Our server's adapters against transformers and tinker-cookbook 0.6.1, family by family.

For each family of the catalog (Llama and Qwen3, tied and untied; Qwen3 MoE; Qwen3.5 dense
and MoE, vision-language as on the Hub; GPT-OSS), a tiny config written by transformers is
given to a real server over 127.0.0.1 (``server start --model-config NAME=PATH``); a run is
created, saved with ``ckpt save`` and fetched with ``ckpt download``, as a user would. A
driver in the torch venv (raw_adapter_driver.py) then builds each model from its config
(``from_config``: no weights downloaded) and checks every tensor of the downloaded adapter
against it and against the cookbook's own merge and ``build_lora_adapter``.

Needs ``$LOGITS_TORCH_PYTHON`` (.ci/run's .venv-torch): skipped without it, failed in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import invoke

pytestmark = pytest.mark.slow
DRIVER = Path(__file__).with_name("raw_adapter_driver.py")
DRIVER_TIMEOUT_SECONDS = 600  # torch import and eight tiny models: ~30 s on 2 cores

FAMILIES = [
    "gpt-oss",
    "llama-tied",
    "llama-untied",
    "qwen3-moe",
    "qwen3-tied",
    "qwen3-untied",
    "qwen3.5-moe",
    "qwen3.5-tied",
]


def _drive(torch_python: str, *args: str) -> str:
    result = subprocess.run(
        [torch_python, str(DRIVER), *args],
        capture_output=True,
        text=True,
        timeout=DRIVER_TIMEOUT_SECONDS,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def _ok(*args: str) -> str:
    result = invoke(args)
    assert result.exit_code == 0, result.stderr or result.stdout
    return str(result.stdout)


@pytest.fixture(scope="module")
def reports(torch_python: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    from logits_cli.server.serve import start_in_thread
    from logits_cli.server.settings import ServerSettings

    configs = tmp_path_factory.mktemp("configs")
    assert json.loads(_drive(torch_python, "configs", str(configs))) == FAMILIES
    settings = ServerSettings(
        model_configs=tuple(f"tiny/{f}={configs / f / 'config.json'}" for f in FAMILIES)
    )
    downloads = tmp_path_factory.mktemp("downloads")
    cases = []
    with (
        start_in_thread(tmp_path_factory.mktemp("server-home"), settings) as running,
        pytest.MonkeyPatch.context() as env,
    ):
        # A module fixture runs before the per-test isolated_env: isolate the CLI here.
        for name in [n for n in os.environ if n.startswith(("LOGITS_", "TINKER_"))]:
            env.delenv(name)
        env.setenv("LOGITS_HOME", str(tmp_path_factory.mktemp("client-home")))
        env.setenv("LOGITS_BASE_URL", running.base_url)
        env.setenv("LOGITS_API_KEY", running.store.create_api_key("alice"))
        for family in FAMILIES:
            run = _ok("runs", "create", "--base-model", f"tiny/{family}", "--rank", "4", "-q")
            path = _ok("ckpt", "save", "s", "--sampler", "--run", run.strip(), "-q").strip()
            _ok("ckpt", "download", path, "-o", str(downloads / family), "-q")
            cases.append(
                {
                    "family": family,
                    "config_dir": str(configs / family),
                    "adapter_dir": str(downloads / family / "s"),
                }
            )
    cases += _old_format_cases(cases)
    out = json.loads(_drive(torch_python, "check", json.dumps(cases)))
    return {report["family"]: report for report in out}


def _old_format_cases(cases: list[dict]) -> list[dict]:
    """Copies of two downloads rewritten as our server wrote them before issue 24: the check
    must tell them apart from the service's format."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    def rewrite(case: dict, edit) -> dict:
        source = Path(case["adapter_dir"])
        target = source.with_name("old-format")
        target.mkdir()
        (target / "adapter_config.json").write_bytes((source / "adapter_config.json").read_bytes())
        tensors = edit(load_file(source / "adapter_model.safetensors"))
        save_file(tensors, target / "adapter_model.safetensors", metadata={"format": "pt"})
        return {**case, "family": f"old:{case['family']}", "adapter_dir": str(target)}

    def qwen35(tensors: dict) -> dict:
        out = {k.replace("model.unembed_tokens", "lm_head"): v for k, v in tensors.items()}
        prefix = "base_model.model.model.layers.0.linear_attn"
        parts = [out.pop(f"{prefix}.in_proj_{p}.lora_B.weight") for p in "qkv"]
        out[f"{prefix}.in_proj_qkv.lora_B.weight"] = np.concatenate(parts)
        out[f"{prefix}.in_proj_qkv.lora_A.weight"] = out.pop(f"{prefix}.in_proj_q.lora_A.weight")
        del out[f"{prefix}.in_proj_k.lora_A.weight"], out[f"{prefix}.in_proj_v.lora_A.weight"]
        gate = "base_model.model.model.layers.3.self_attn.q_proj.lora_B.weight"
        out[gate] = np.ascontiguousarray(out[gate][: out[gate].shape[0] // 2])  # no gate
        return out

    def gpt_oss(tensors: dict) -> dict:
        return {k.replace(".attn.", ".self_attn."): v for k, v in tensors.items()}

    by_family = {case["family"]: case for case in cases}
    return [rewrite(by_family["qwen3.5-tied"], qwen35), rewrite(by_family["gpt-oss"], gpt_oss)]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_adapter_tensor_fits_the_transformers_model(
    reports: dict[str, dict], family: str
) -> None:
    report = reports[family]
    assert report["problems"] == []
    assert report["pairs_checked"] >= 14  # 2 layers' attention and MLP, and the unembedding
    # The cookbook merged every pair into the model: some weights moved (B was made non-zero).
    assert report["weights_changed_by_merge"] >= report["pairs_checked"] // 2


def test_cookbook_conversion_names_each_familys_modules(reports: dict[str, dict]) -> None:
    modules = {family: set(report["peft_target_modules"]) for family, report in reports.items()}
    assert modules["llama-untied"] == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"
    }  # fmt: skip
    assert "embed_tokens" in modules["llama-tied"] and "lm_head" not in modules["llama-tied"]
    assert {"in_proj_q", "in_proj_k", "in_proj_v"} <= modules["qwen3.5-tied"]
    assert "embed_tokens" in modules["qwen3.5-tied"]
    assert {"gate_proj", "up_proj", "down_proj", "q_proj"} <= modules["gpt-oss"]
    assert "lm_head" in modules["qwen3.5-moe"]


def test_the_check_refuses_the_format_before_issue_24(reports: dict[str, dict]) -> None:
    qwen35 = "\n".join(reports["old:qwen3.5-tied"]["problems"])
    assert "the unembedding is model.unembed_tokens" in qwen35
    assert "Qwen3.5 trains split in_proj_q/k/v" in qwen35
    assert "layers.3.self_attn.q_proj.lora_A.weight: (4, 64)/(1024, 4)" in qwen35  # no gate
    gpt_oss = "\n".join(reports["old:gpt-oss"]["problems"])
    assert "GPT-OSS attention is .attn." in gpt_oss
