"""Runs in the torch venv (LOGITS_TORCH_PYTHON), never imported by the test-suite itself.

``make FAMILY MODEL_DIR RAW_DIR``: a tiny base model of FAMILY built by transformers from a
config (no weights downloaded) and saved; a raw adapter in the service's format for it
(names and stacked expert shapes of tinker-cookbook 0.6.1's tests: ``base_model.model.``,
``unembed_tokens``, GPT-OSS ``.attn``, Qwen3.5 split ``in_proj_q/k/v``, ``experts.w1/w2/w3``
with the shared A of w1/w3 and the shared B of w2), random values.

``save-model CONFIG_DIR MODEL_DIR``: the model of a config.json (as our server was given it),
built by transformers and saved, for the cookbook to read.

``compare MODEL_DIR RAW_DIR OURS COOKBOOK_OUT [--peft]``: tinker-cookbook's
``build_lora_adapter`` on the same raw adapter, compared name for name and tensor for tensor
with OURS; with ``--peft`` both are loaded by ``peft.PeftModel.from_pretrained`` and OURS
must fill every LoRA parameter exactly (no missing, unexpected or mis-shaped key) and give
the cookbook adapter's logits. Prints one JSON line; exits 1 on a mismatch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

RANK = 4
TARGET_LEAVES = {
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "in_proj_qkv",
    "in_proj_z",
    "in_proj_b",
    "in_proj_a",
    "out_proj",
    "lm_head",
}


def family_config(family: str):  # type: ignore[no-untyped-def]
    import transformers as tf

    dense = dict(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=128,
        max_position_embeddings=64,
    )
    if family in ("llama", "llama_tied"):
        return tf.LlamaConfig(**dense, tie_word_embeddings=family.endswith("tied"))
    if family in ("qwen3", "qwen3_tied"):
        return tf.Qwen3Config(**dense, tie_word_embeddings=family.endswith("tied"))
    if family == "qwen3_moe":
        return tf.Qwen3MoeConfig(
            **dense,
            moe_intermediate_size=32,
            num_experts=4,
            num_experts_per_tok=2,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            tie_word_embeddings=False,
        )
    linear = dict(
        layer_types=["linear_attention", "full_attention"],
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_key_head_dim=8,
        linear_value_head_dim=8,
        linear_conv_kernel_dim=4,
    )
    if family == "qwen3_5":
        return tf.Qwen3_5TextConfig(**dense, **linear, tie_word_embeddings=True)
    if family == "qwen3_5_vl":  # as the Hub ships Qwen3.5: vision-language, model.language_model.
        vision = dict(
            depth=1,
            hidden_size=32,
            intermediate_size=32,
            num_heads=2,
            out_hidden_size=64,
            patch_size=16,
            temporal_patch_size=2,
            spatial_merge_size=2,
            num_position_embeddings=16,
        )
        return tf.Qwen3_5Config(
            text_config=dict(**dense, **linear), vision_config=vision, tie_word_embeddings=True
        )
    if family == "qwen3_5_moe":
        return tf.Qwen3_5MoeTextConfig(
            **dense,
            **linear,
            moe_intermediate_size=32,
            shared_expert_intermediate_size=32,
            num_experts=4,
            num_experts_per_tok=2,
            tie_word_embeddings=False,
        )
    if family == "gpt_oss":
        return tf.GptOssConfig(
            **dense,
            num_local_experts=4,
            num_experts_per_tok=2,
            layer_types=["sliding_attention", "full_attention"],
            tie_word_embeddings=False,
        )
    raise SystemExit(f"unknown family {family}")


def raw_name(module: str, family: str) -> str:
    name = module.replace("model.language_model.", "model.")
    if name == "lm_head":
        name = "model.unembed_tokens"
    if family == "gpt_oss":
        name = name.replace(".self_attn.", ".attn.")
    return f"base_model.model.{name}"


def make(family: str, model_dir: Path, raw_dir: Path) -> None:
    import transformers as tf

    torch.manual_seed(0)
    config = family_config(family)
    if family.endswith("_vl"):
        model = tf.AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
        config = config.text_config
    else:
        model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(model_dir)
    dtype = torch.bfloat16 if family in ("qwen3_moe", "gpt_oss") else torch.float32
    tensors: dict[str, torch.Tensor] = {}

    def pair(name: str, a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> None:
        tensors[f"{name}.lora_A.weight"] = (torch.randn(a_shape) * 0.1).to(dtype)
        tensors[f"{name}.lora_B.weight"] = (torch.randn(b_shape) * 0.1).to(dtype)

    for module_name, module in model.named_modules():
        leaf = module_name.rsplit(".", 1)[-1]
        if ".visual." in f".{module_name}.":
            continue  # the service trains the language model only
        if isinstance(module, torch.nn.Linear) and leaf in TARGET_LEAVES:
            name = raw_name(module_name, family)
            if leaf == "in_proj_qkv":  # the service trains q, k, v apart (unequal widths)
                key = config.linear_num_key_heads * config.linear_key_head_dim
                value = config.linear_num_value_heads * config.linear_value_head_dim
                for part, width in (("q", key), ("k", key), ("v", value)):
                    part_name = name.replace("in_proj_qkv", f"in_proj_{part}")
                    pair(part_name, (RANK, module.in_features), (width, RANK))
            else:
                pair(name, (RANK, module.in_features), (module.out_features, RANK))
        if module_name.endswith(".mlp.experts"):
            experts = getattr(config, "num_experts", None) or config.num_local_experts
            width = getattr(config, "moe_intermediate_size", None) or config.intermediate_size
            hidden, name = config.hidden_size, raw_name(module_name, family)
            pair(f"{name}.w1", (1, RANK, hidden), (experts, width, RANK))
            pair(f"{name}.w3", (1, RANK, hidden), (experts, width, RANK))
            pair(f"{name}.w2", (experts, RANK, width), (1, hidden, RANK))
    raw_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(raw_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    config_json = {"r": RANK, "lora_alpha": 32, "peft_type": "LORA", "task_type": "CAUSAL_LM"}
    (raw_dir / "adapter_config.json").write_text(json.dumps(config_json))
    print(json.dumps({"tensors": len(tensors), "model_type": config.model_type}))


def compare(model_dir: Path, raw_dir: Path, ours: Path, cookbook_out: Path, with_peft: bool):  # type: ignore[no-untyped-def]
    from tinker_cookbook.weights import build_lora_adapter

    build_lora_adapter(
        base_model=str(model_dir), adapter_path=str(raw_dir), output_path=str(cookbook_out)
    )
    theirs_t = load_file(str(cookbook_out / "adapter_model.safetensors"))
    ours_t = load_file(str(ours / "adapter_model.safetensors"))
    problems: list[str] = []
    if sorted(theirs_t) != sorted(ours_t):
        problems.append(f"names differ: only cookbook {sorted(set(theirs_t) - set(ours_t))[:5]}")
        problems.append(f"only ours {sorted(set(ours_t) - set(theirs_t))[:5]}")
    for key in sorted(set(theirs_t) & set(ours_t)):
        a, b = theirs_t[key], ours_t[key]
        if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
            problems.append(f"{key}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}")
    theirs_c = json.loads((cookbook_out / "adapter_config.json").read_text())
    ours_c = json.loads((ours / "adapter_config.json").read_text())
    for config in (theirs_c, ours_c):
        config.pop("base_model_name_or_path")
    if theirs_c != ours_c:
        problems.append(f"adapter_config differs: {theirs_c} vs {ours_c}")
    result = {"tensors": len(ours_t), "problems": problems[:20]}
    if with_peft and not problems:
        result |= peft_check(model_dir, ours, cookbook_out, ours_t)
    print(json.dumps(result))
    return 1 if result["problems"] else 0


def peft_check(model_dir: Path, ours: Path, cookbook_out: Path, ours_t):  # type: ignore[no-untyped-def]
    import transformers as tf
    from peft import PeftModel

    def load(adapter: Path):  # type: ignore[no-untyped-def]
        base = tf.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        return PeftModel.from_pretrained(base, str(adapter)).eval()

    model = load(ours)
    lora = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    expected = {k.replace(".weight", ".default.weight"): v for k, v in ours_t.items()}
    problems = [f"missing {k}" for k in sorted(set(lora) - set(expected))][:5]
    problems += [f"unexpected {k}" for k in sorted(set(expected) - set(lora))][:5]
    for key in sorted(set(lora) & set(expected)):
        if lora[key].shape != expected[key].shape or not torch.equal(lora[key], expected[key]):
            problems.append(f"mis-loaded {key}")
    ids = torch.arange(12).remainder(100)[None]
    with torch.no_grad():
        ours_logits = model(ids).logits
        theirs_logits = load(cookbook_out)(ids).logits
        base_logits = tf.AutoModelForCausalLM.from_pretrained(model_dir)(ids).logits
    if not torch.equal(ours_logits, theirs_logits):
        problems.append("logits differ from the cookbook adapter's")
    changed = not torch.allclose(ours_logits, base_logits)
    return {"problems": problems, "peft_loaded": len(lora), "adapter_changes_logits": changed}


def save_model(config_dir: Path, model_dir: Path) -> None:
    """A model built from a config.json alone, saved (what the cookbook reads its names from)."""
    import transformers as tf

    config = tf.AutoConfig.from_pretrained(config_dir)
    vision_language = getattr(config, "vision_config", None) is not None
    auto = tf.AutoModelForImageTextToText if vision_language else tf.AutoModelForCausalLM
    auto.from_config(config, dtype=torch.float32).save_pretrained(model_dir)
    print(json.dumps({"model_type": config.model_type}))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "make":
        make(args[0], Path(args[1]), Path(args[2]))
    elif command == "save-model":
        save_model(Path(args[0]), Path(args[1]))
    else:
        sys.exit(
            compare(Path(args[0]), Path(args[1]), Path(args[2]), Path(args[3]), "--peft" in args)
        )
