"""``ckpt export`` without torch: names per family, expert expansion, --dtype, the manifest,
atomic replacement, and bad input (one line, the documented exit code, nothing left)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from logits_cli.api import peft_families
from logits_cli.store.catalog import default_catalog
from tests.cli.conftest import Cli, invoke
from tests.peft.helpers import TINKER_PATH, mark_downloaded

RANK = 2


def raw_adapter(directory: Path, tensors: dict[str, np.ndarray], base: str | None) -> Path:
    directory.mkdir(parents=True)
    save_file(tensors, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    config: dict[str, object] = {"r": RANK, "lora_alpha": 32}
    if base:
        config["base_model_name_or_path"] = base
    (directory / "adapter_config.json").write_text(json.dumps(config))
    (directory / "optimizer_state.safetensors").write_bytes(b"not read")
    mark_downloaded(directory)
    return directory


def moe_tensors(experts: int = 3, hidden: int = 8, width: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    pre = "base_model.model.model.layers.0"

    def r(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    return {
        f"{pre}.self_attn.q_proj.lora_A.weight": r(RANK, hidden),
        f"{pre}.self_attn.q_proj.lora_B.weight": r(hidden, RANK),
        f"{pre}.mlp.experts.w1.lora_A.weight": r(1, RANK, hidden),
        f"{pre}.mlp.experts.w1.lora_B.weight": r(experts, width, RANK),
        f"{pre}.mlp.experts.w2.lora_A.weight": r(experts, RANK, width),
        f"{pre}.mlp.experts.w2.lora_B.weight": r(1, hidden, RANK),
        "base_model.model.model.unembed_tokens.lora_A.weight": r(RANK, hidden),
        "base_model.model.model.unembed_tokens.lora_B.weight": r(16, RANK),
    }


def test_moe_export_expands_experts_and_names_the_hf_modules(tmp_path: Path) -> None:
    tensors = moe_tensors()
    src = raw_adapter(tmp_path / "src", tensors, "Qwen/Qwen3-30B-A3B")
    out = tmp_path / "out"

    result = invoke(["ckpt", "export", str(src), "-o", str(out), "--json"])

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["family"] == "default" and report["base_model"] == "Qwen/Qwen3-30B-A3B"
    written = load_file(str(out / "adapter_model.safetensors"))
    pre = "base_model.model.model.layers.0.mlp.experts"
    assert len(written) == 2 + 2 + 3 * 2 * 2  # q_proj, lm_head, 3 experts x (gate, down)
    for expert in range(3):
        gate_a = written[f"{pre}.{expert}.gate_proj.lora_A.weight"]
        np.testing.assert_array_equal(gate_a, tensors[f"{pre}.w1.lora_A.weight"][0])
        np.testing.assert_array_equal(
            written[f"{pre}.{expert}.gate_proj.lora_B.weight"],
            tensors[f"{pre}.w1.lora_B.weight"][expert],
        )
        np.testing.assert_array_equal(
            written[f"{pre}.{expert}.down_proj.lora_A.weight"],
            tensors[f"{pre}.w2.lora_A.weight"][expert],
        )
    assert "base_model.model.lm_head.lora_B.weight" in written  # Qwen3-30B-A3B is untied
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["target_modules"] == ["down_proj", "gate_proj", "lm_head", "q_proj"]
    assert config["r"] == RANK and config["lora_alpha"] == 32 and config["peft_type"] == "LORA"
    manifest = json.loads((out / ".logits-export.json").read_text())
    source_manifest = json.loads((src / ".logits-checkpoint.json").read_text())
    assert manifest["source"]["tinker_path"] == TINKER_PATH
    assert (
        manifest["source"]["adapter_sha256"]
        == source_manifest["files"]["adapter_model.safetensors"]["sha256"]
    )
    assert manifest["conversion"]["base_model_facts"] == "catalog"
    assert "optimizer_state.safetensors" not in {p.name for p in out.iterdir()}


def test_names_per_family_from_the_catalog(tmp_path: Path) -> None:
    tensors = {
        "base_model.model.model.layers.0.attn.q_proj.lora_A.weight": np.ones((RANK, 4), "f4"),
        "base_model.model.model.layers.0.attn.q_proj.lora_B.weight": np.ones((4, RANK), "f4"),
        "base_model.model.model.unembed_tokens.lora_A.weight": np.ones((RANK, 4), "f4"),
        "base_model.model.model.unembed_tokens.lora_B.weight": np.ones((9, RANK), "f4"),
    }
    expected = {
        "openai/gpt-oss-20b": "model.layers.0.self_attn.q_proj",
        "Qwen/Qwen3.5-4B": "model.language_model.layers.0.attn.q_proj",
    }
    unembed = {
        "openai/gpt-oss-20b": "lm_head",
        "Qwen/Qwen3.5-4B": "model.language_model.embed_tokens",
    }
    for base, module in expected.items():
        src = raw_adapter(tmp_path / base, tensors, base)
        out = tmp_path / "out" / base
        assert invoke(["ckpt", "export", str(src), "-o", str(out), "-q"]).exit_code == 0
        names = set(load_file(str(out / "adapter_model.safetensors")))
        assert f"base_model.model.{module}.lora_A.weight" in names
        assert f"base_model.model.{unembed[base]}.lora_B.weight" in names


def test_dtype_converts_bf16_with_rounding(tmp_path: Path) -> None:
    # 1 + 2**-8 lies halfway between two bfloat16 values: it rounds to the even one, 1.0.
    values = np.array([[1.0, 3.0e38], [-2.5e-3, 1.00390625]], dtype=np.float32)
    tensors = {
        "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight": values,
        "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight": values,
    }
    src = raw_adapter(tmp_path / "src", tensors, "Qwen/Qwen3-8B")
    out = tmp_path / "out"
    assert invoke(["ckpt", "export", str(src), "-o", str(out), "--dtype", "bf16"]).exit_code == 0
    raw = (out / "adapter_model.safetensors").read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"BF16"}
    back = json.loads((out / ".logits-export.json").read_text())["conversion"]["dtype"]
    assert np.frombuffer(raw[-8:], "<u2").tolist() == [0x3F80, 0x7F62, 0xBB24, 0x3F80]
    assert back == "BF16"


def test_every_catalog_model_has_export_facts() -> None:
    assert sorted(default_catalog().names()) == peft_families.catalog_names()


# -- bad input: one line, the exit code, nothing left ------------------------------------------


def assert_one_line_failure(result: object, code: int, words: str, parent: Path) -> None:
    assert getattr(result, "exit_code") == code, getattr(result, "output")  # noqa: B009
    errors = [line for line in getattr(result, "stderr").splitlines() if line.startswith("Error")]  # noqa: B009
    assert len(errors) == 1 and words in errors[0], getattr(result, "stderr")  # noqa: B009
    assert "Traceback" not in getattr(result, "stderr")  # noqa: B009
    assert [p.name for p in parent.iterdir() if p.name.startswith(".out")] == []
    assert not (parent / "out").exists()


def test_a_directory_that_is_not_a_checkpoint_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    result = invoke(["ckpt", "export", str(tmp_path / "plain"), "-o", str(tmp_path / "out")])
    assert_one_line_failure(result, 2, "not a downloaded checkpoint", tmp_path)


def test_offline_without_base_config_names_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    src = raw_adapter(tmp_path / "src", moe_tensors(), "someone/unknown-model")
    result = invoke(["ckpt", "export", str(src), "-o", str(tmp_path / "out")])
    assert_one_line_failure(result, 6, "offline", tmp_path)
    assert "Hint: pass --base-config FILE|DIR" in result.stderr


def test_a_family_that_cannot_be_served_is_exit_10(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "deepseek_v3", "architectures": ["X"]}))
    src = raw_adapter(tmp_path / "src", moe_tensors(), "deepseek-ai/DeepSeek-V3.1")
    result = invoke(
        ["ckpt", "export", str(src), "-o", str(tmp_path / "out"), "--base-config", str(config)]
    )
    assert_one_line_failure(result, 10, "DeepSeek V3", tmp_path)
    assert "build_hf_model" in result.stderr


def test_an_existing_out_is_refused_then_replaced_with_force(tmp_path: Path) -> None:
    src = raw_adapter(tmp_path / "src", moe_tensors(), "Qwen/Qwen3-30B-A3B")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    result = invoke(["ckpt", "export", str(src), "-o", str(out)])
    assert result.exit_code == 5 and "--force" in result.stderr
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert invoke(["ckpt", "export", str(src), "-o", str(out), "--force"]).exit_code == 0
    assert "mine.txt" not in {p.name for p in out.iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # nothing aside left


def test_export_of_a_saved_checkpoint_path_downloads_it_first(
    cli: Cli, run: str, tmp_path: Path
) -> None:
    saved = json.loads(cli.ok("ckpt", "save", "w", "--json").stdout)
    out = tmp_path / "served"
    report = json.loads(cli.ok("ckpt", "export", "w", "-o", str(out), "--json").stdout)
    assert report["source"] == saved["tinker_path"] and report["base_model"] == "logits/tiny"
    assert sorted(p.name for p in out.iterdir()) == [
        ".logits-export.json",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
