"""Runs in the torch venv (``$LOGITS_TORCH_PYTHON``), driven by test_raw_adapter_families.py.

``configs OUT``: writes ``OUT/<family>/config.json`` for a tiny model of every family of our
catalog, as transformers itself writes a config (its config classes, ``to_json_file``).

``check CASES_JSON``: for each case (family, config directory, adapter directory from our
server), builds the model with transformers from the config alone (no weights downloaded),
checks that every adapter tensor maps, by tinker-cookbook 0.6.1's remap rules, to a real
parameter whose shape it fits, merges it with the cookbook's ``merge_adapter_weights`` and
converts it with the cookbook's ``build_lora_adapter``. Prints one JSON report.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file
from tinker_cookbook.weights import build_lora_adapter
from tinker_cookbook.weights._artifacts import get_model_state_keys
from tinker_cookbook.weights._merge import (
    detect_merge_profile,
    expand_expert_lora_tensors,
    merge_adapter_weights,
)
from tinker_cookbook.weights._merge_qwen3_5 import SPLIT_QKV_SUFFIXES, build_qwen3_5_name_remaps
from tinker_cookbook.weights._merge_utils import build_name_remaps, remap_adapter_name

SMALL = {
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 128,
    "max_position_embeddings": 2048,
}
# Qwen3.5: 2 key heads and 4 value heads in the DeltaNet, so in_proj_v is wider than q, k.
DELTANET = {
    "layer_types": ["linear_attention", "full_attention"],
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "linear_key_head_dim": 8,
    "linear_value_head_dim": 8,
}
QWEN35_DEFAULT_SIZES = {
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 4,  # the default interval: layers 0-2 linear, 3 full attention
    "num_attention_heads": 4,
    "vocab_size": 128,
}
TINY_VISION = {"depth": 1, "hidden_size": 32, "intermediate_size": 32, "num_heads": 2}


def family_configs() -> dict[str, transformers.PretrainedConfig]:
    moe = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}
    vision = {**TINY_VISION, "out_hidden_size": SMALL["hidden_size"]}
    configs: dict[str, transformers.PretrainedConfig] = {
        "llama-untied": transformers.LlamaConfig(**SMALL, tie_word_embeddings=False),
        "llama-tied": transformers.LlamaConfig(**SMALL, tie_word_embeddings=True),
        "qwen3-untied": transformers.Qwen3Config(**SMALL, tie_word_embeddings=False),
        "qwen3-tied": transformers.Qwen3Config(**SMALL, tie_word_embeddings=True),
        "qwen3-moe": transformers.Qwen3MoeConfig(**SMALL, **moe, decoder_sparse_step=1),
        # As the Hub's Qwen3.5 checkpoints are: vision-language, the text model nested. This
        # one keeps the architecture's head_dim (256) and DeltaNet sizes, which transformers
        # then leaves out of the file: the server must know them from model_type.
        "qwen3.5-tied": transformers.Qwen3_5Config(
            text_config={**QWEN35_DEFAULT_SIZES, "tie_word_embeddings": True},
            vision_config=vision,
            tie_word_embeddings=True,
        ),
        "qwen3.5-moe": transformers.Qwen3_5MoeConfig(
            text_config={**SMALL, **DELTANET, **moe, "shared_expert_intermediate_size": 48},
            vision_config=vision,
        ),
        "gpt-oss": transformers.GptOssConfig(
            **{**SMALL, "intermediate_size": 32},
            num_local_experts=4,
            num_experts_per_tok=2,
            layer_types=["sliding_attention", "full_attention"],
        ),
    }
    for family, config in configs.items():
        vision_language = family.startswith("qwen3.5")
        model_class = (
            transformers.AutoModelForImageTextToText
            if vision_language
            else transformers.AutoModelForCausalLM
        )
        # Hub configs name their class; the cookbook tells GPT-OSS by it.
        mapping = model_class._model_mapping._model_mapping  # model_type -> class name
        config.architectures = [mapping[config.model_type]]
    return configs


def write_configs(out: Path) -> None:
    for family, config in family_configs().items():
        (out / family).mkdir(parents=True)
        config.to_json_file(str(out / family / "config.json"))
    print(json.dumps(sorted(family_configs())))


def build_model(config_dir: Path) -> torch.nn.Module:
    config = transformers.AutoConfig.from_pretrained(str(config_dir))
    if config.architectures and "ConditionalGeneration" in config.architectures[0]:
        return transformers.AutoModelForImageTextToText.from_config(config)
    return transformers.AutoModelForCausalLM.from_config(config)


def expert_delta_shape(layout: str, projection: str, parameter: tuple[int, ...]) -> tuple:
    """(out, in) of one expert's delta for w1/w3 (gate/up) or w2 (down) in a fused tensor."""
    if layout == "fused_interleaved":  # GPT-OSS stores (experts, in, out)
        rows, cols = parameter[2], parameter[1]
    else:  # (experts, out, in)
        rows, cols = parameter[1], parameter[2]
    return (rows // 2, cols) if projection != "down_proj" else (rows, cols)


def vocabulary_problems(base_name: str, profile) -> list[str]:
    """Names a shape check cannot catch: each module a service name of its own would give
    the same target (cookbook weights/README.md "Key Remapping")."""
    problems = []
    leaf = base_name.removesuffix(".weight").rsplit(".", 1)[-1]
    if leaf in ("lm_head", "embed_tokens"):
        problems.append(f"{base_name}: the unembedding is model.unembed_tokens")
    if profile.model_family == "gpt_oss" and ".self_attn." in base_name:
        problems.append(f"{base_name}: GPT-OSS attention is .attn.")
    if profile.split_qkv_projections and leaf == "in_proj_qkv":
        problems.append(f"{base_name}: Qwen3.5 trains split in_proj_q/k/v")
    return problems


def check_case(case: dict, work: Path) -> dict:
    problems: list[str] = []
    model = build_model(Path(case["config_dir"]))
    base_dir = work / "base"
    model.save_pretrained(str(base_dir))
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    saved_keys = get_model_state_keys(base_dir)
    config_dict = json.loads((base_dir / "config.json").read_text())
    profile = detect_merge_profile(config_dict, saved_keys)
    remaps = (
        build_qwen3_5_name_remaps(profile, saved_keys)
        if profile.split_qkv_projections
        else build_name_remaps(profile, saved_keys)
    )
    adapter_dir = Path(case["adapter_dir"])
    adapter = load_file(str(adapter_dir / "adapter_model.safetensors"))
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    rank = adapter_config["r"]
    split_rows: dict[str, dict[str, int]] = {}
    checked = 0
    for name in sorted(n for n in adapter if ".lora_A." in n):
        lora_a, lora_b = adapter[name], adapter[name.replace(".lora_A.", ".lora_B.")]
        base_name = name.replace(".lora_A", "")
        target = remap_adapter_name(base_name, remaps)
        checked += 1
        problems.extend(vocabulary_problems(base_name, profile))
        if ".experts" in base_name:
            if lora_a.ndim != 3 or lora_b.ndim != 3:
                problems.append(f"{name}: experts not stacked 3-D")
                continue
            shared_a, shared_b = lora_a.shape[0] == 1, lora_b.shape[0] == 1
            if base_name.endswith((".w1.weight", ".w3.weight")) != (shared_a and not shared_b):
                problems.append(f"{name}: sharing {lora_a.shape[0]}/{lora_b.shape[0]} wrong")
            lora_a, lora_b = expand_expert_lora_tensors(lora_a, lora_b)
            for old, new in profile.expert_key_remaps:
                target = target.replace(old, new)
            projection = target.removesuffix(".weight").rsplit(".", 1)[1]
            experts_prefix = target.removesuffix(f".{projection}.weight")
            fused = f"{experts_prefix}.gate_up_proj" if projection != "down_proj" else None
            fused = fused or f"{experts_prefix}.down_proj"
            if fused in shapes:
                count = shapes[fused][0]
                want = expert_delta_shape(profile.expert_layout, projection, shapes[fused])
            else:
                per_expert = f"{experts_prefix}.0.{projection}.weight"
                if per_expert not in shapes:
                    problems.append(f"{name}: no expert parameter {per_expert}")
                    continue
                count = sum(
                    1
                    for key in shapes
                    if key.endswith(f".{projection}.weight")
                    and key.startswith(f"{experts_prefix}.")
                )
                want = shapes[per_expert]
            got = (lora_b.shape[1], lora_a.shape[2])
            if lora_a.shape[0] != count or got != tuple(want) or lora_a.shape[1] != rank:
                problems.append(
                    f"{name}: {tuple(lora_a.shape)}/{tuple(lora_b.shape)} vs "
                    f"{count} experts of {tuple(want)}"
                )
            continue
        for old, new in profile.extra_key_remaps:
            target = target.replace(old, new)
        suffix = next((s for s in SPLIT_QKV_SUFFIXES if target.endswith(s)), None)
        if suffix and profile.split_qkv_projections:
            fused = target[: -len(suffix)] + ".in_proj_qkv.weight"
            split_rows.setdefault(fused, {})[SPLIT_QKV_SUFFIXES[suffix]] = lora_b.shape[0]
            if fused not in shapes or lora_a.shape != (rank, shapes[fused][1]):
                problems.append(f"{name}: {fused} missing or input width wrong")
            continue
        if target not in shapes:
            problems.append(f"{name}: maps to {target}, not a parameter of the model")
            continue
        out_features, in_features = shapes[target]
        if lora_a.shape != (rank, in_features) or lora_b.shape != (out_features, rank):
            problems.append(
                f"{name}: {tuple(lora_a.shape)}/{tuple(lora_b.shape)} vs {target} {shapes[target]}"
            )
    for fused, rows in split_rows.items():
        if sorted(rows) != ["k", "q", "v"] or sum(rows.values()) != shapes[fused][0]:
            problems.append(f"{fused}: split q/k/v rows {rows} vs {shapes[fused][0]}")

    # The cookbook's own merge: it plans every op and refuses any shape mismatch.
    noisy = {k: (v + 0.01 if ".lora_B." in k else v) for k, v in adapter.items()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        merge_adapter_weights(model, noisy, adapter_config)
    except Exception as exc:  # reported to the test, which fails on any problem
        problems.append(f"merge_adapter_weights: {type(exc).__name__}: {exc}")
    changed = sorted(k for k, v in model.state_dict().items() if not torch.equal(v, before[k]))

    # And its conversion to a PEFT adapter, given the tiny model's directory (no Hub).
    peft_dir = work / "peft"
    peft_modules: list[str] = []
    try:
        build_lora_adapter(
            base_model=str(base_dir), adapter_path=str(adapter_dir), output_path=str(peft_dir)
        )
        peft_config = json.loads((peft_dir / "adapter_config.json").read_text())
        peft_modules = peft_config["target_modules"]
    except Exception as exc:
        problems.append(f"build_lora_adapter: {type(exc).__name__}: {exc}")
    return {
        "family": case["family"],
        "model_class": type(model).__name__,
        "pairs_checked": checked,
        "weights_changed_by_merge": len(changed),
        "peft_target_modules": peft_modules,
        "problems": problems,
    }


def main() -> None:
    command, argument = sys.argv[1], sys.argv[2]
    if command == "configs":
        write_configs(Path(argument))
        return
    torch.manual_seed(0)
    reports = []
    for case in json.loads(argument):
        with tempfile.TemporaryDirectory() as work:
            reports.append(check_case(case, Path(work)))
    print(json.dumps(reports))


if __name__ == "__main__":
    main()
