"""The base-model catalog: shipped data, LoRA layouts per family, operator configs, errors."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from logits_cli import models
from logits_cli.errors import NotFoundError, UsageError
from logits_cli.store import catalog, layout, lora

FULL = models.LoraConfig(rank=8)


def shape(name: str) -> catalog.ModelShape:
    found = catalog.default_catalog().get(name)
    assert found is not None, name
    return found


def tensor_shapes(model: catalog.ModelShape, lora_config: models.LoraConfig = FULL) -> dict:
    return layout.lora_tensor_shapes(model, lora_config)


# -- the shipped file ----------------------------------------------------------------------


def test_every_entry_loads_and_names_its_source() -> None:
    document = json.loads(catalog.CATALOG_FILE.read_text(encoding="utf-8"))
    names = [entry["name"] for entry in document["models"]]
    assert len(names) == len(set(names))
    assert catalog.default_catalog().names() == names
    for entry in document["models"]:
        if entry["name"] == "logits/tiny":
            continue
        assert entry["source"].startswith(f"huggingface.co/{entry['name']}/config.json")
        assert entry["checked_against"], entry["name"]
    assert {
        "Qwen/Qwen3.5-4B",
        "Qwen/Qwen3-8B",
        "Qwen/Qwen3-30B-A3B",
        "meta-llama/Llama-3.1-70B",
        "meta-llama/Llama-3.2-3B",
        "openai/gpt-oss-20b",
        "openai/gpt-oss-120b",
        "logits/tiny",
    } <= set(names)


def test_catalog_file_ships_in_the_package() -> None:
    assert catalog.CATALOG_FILE.parent == Path(lora.__file__).parent
    assert catalog.CATALOG_FILE.name == "base_models.json"


# -- dense models ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Qwen/Qwen3-0.6B", "Qwen/Qwen3-32B", "meta-llama/Llama-3.1-70B", "logits/tiny"]
)
def test_dense_lora_shapes_follow_the_config(name: str) -> None:
    model = shape(name)
    config = next(
        e["config"]
        for e in json.loads(catalog.CATALOG_FILE.read_text())["models"]
        if e["name"] == name
    )
    hidden, heads, kv_heads = (
        config["hidden_size"],
        config["num_attention_heads"],
        config["num_key_value_heads"],
    )
    head_dim, inner = config["head_dim"], config["intermediate_size"]
    tensors = tensor_shapes(model)
    last = config["num_hidden_layers"] - 1
    prefix = f"base_model.model.model.layers.{last}"
    assert tensors[f"{prefix}.self_attn.q_proj.lora_A.weight"] == (8, hidden)
    assert tensors[f"{prefix}.self_attn.q_proj.lora_B.weight"] == (heads * head_dim, 8)
    assert tensors[f"{prefix}.self_attn.k_proj.lora_B.weight"] == (kv_heads * head_dim, 8)
    assert tensors[f"{prefix}.self_attn.o_proj.lora_A.weight"] == (8, heads * head_dim)
    assert tensors[f"{prefix}.mlp.down_proj.lora_A.weight"] == (8, inner)
    assert tensors["base_model.model.model.unembed_tokens.lora_B.weight"] == (
        config["vocab_size"],
        8,
    )
    assert len(tensors) == 2 * (7 * config["num_hidden_layers"] + 1)
    assert model.max_context_length == config["max_position_embeddings"]


# -- hybrid attention -----------------------------------------------------------------------


def test_qwen35_4b_has_gated_deltanet_and_gated_attention_layers() -> None:
    model = shape("Qwen/Qwen3.5-4B")
    assert model.max_context_length == 262144
    modules = layout.adapter_modules(model, FULL)
    linear = {p.split(".", 3)[3] for p in modules if p.startswith("model.layers.0.")}
    assert linear == {
        "linear_attn.in_proj_q",
        "linear_attn.in_proj_k",
        "linear_attn.in_proj_v",
        "linear_attn.in_proj_z",
        "linear_attn.out_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    }
    full = {p.split(".", 3)[3] for p in modules if p.startswith("model.layers.3.")}
    assert full == {
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    }
    # 16 QK heads and 32 V heads of 128 in the DeltaNet; 16 Q / 4 KV heads of 256 with an
    # output gate in the attention layers (every fourth).
    assert modules["model.layers.0.linear_attn.in_proj_q"] == (2560, 16 * 128)
    assert modules["model.layers.0.linear_attn.in_proj_k"] == (2560, 16 * 128)
    assert modules["model.layers.0.linear_attn.in_proj_v"] == (2560, 32 * 128)
    assert modules["model.layers.0.linear_attn.in_proj_z"] == (2560, 32 * 128)
    assert modules["model.layers.0.linear_attn.out_proj"] == (32 * 128, 2560)
    assert modules["model.layers.3.self_attn.q_proj"] == (2560, 2 * 16 * 256)
    assert modules["model.layers.3.self_attn.k_proj"] == (2560, 4 * 256)
    assert modules["model.layers.3.self_attn.o_proj"] == (16 * 256, 2560)
    assert modules["model.layers.31.mlp.down_proj"] == (9216, 2560)
    attention_layers = {int(p.split(".")[2]) for p in modules if ".self_attn." in p}
    assert attention_layers == {3, 7, 11, 15, 19, 23, 27, 31}
    assert modules["model.unembed_tokens"] == (2560, 248320)


def test_qwen3_next_style_config_gets_the_fused_projections() -> None:
    config = {
        "model_type": "qwen3_next",
        "hidden_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "layer_types": ["linear_attention"] * 3 + ["full_attention"],
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "linear_key_head_dim": 8,
        "linear_value_head_dim": 8,
        "num_experts": 4,
        "moe_intermediate_size": 16,
        "shared_expert_intermediate_size": 32,
        "vocab_size": 100,
        "max_position_embeddings": 4096,
    }
    model = catalog.shape_from_config(config, "test/next")
    modules = layout.adapter_modules(model, FULL)
    assert modules["model.layers.0.linear_attn.in_proj_qkvz"] == (64, 2 * 16 + 2 * 32)
    assert modules["model.layers.0.linear_attn.in_proj_ba"] == (64, 2 * 4)
    assert modules["model.layers.0.mlp.shared_expert.up_proj"] == (64, 32)
    assert modules["model.layers.3.self_attn.q_proj"] == (64, 2 * 4 * 16)  # gated
    assert not any(p.endswith("in_proj_qkv") for p in modules)


# -- mixture of experts ---------------------------------------------------------------------


def test_qwen3_moe_gets_stacked_expert_projections() -> None:
    model = shape("Qwen/Qwen3-30B-A3B")
    assert (model.num_experts, model.moe_intermediate_size, model.num_layers) == (128, 768, 48)
    tensors = tensor_shapes(model)
    prefix = "base_model.model.model.layers.47.mlp.experts"
    # gate (w1) and up (w3): A shared by all experts (they read the same hidden state).
    assert tensors[f"{prefix}.w1.lora_A.weight"] == (1, 8, 2048)
    assert tensors[f"{prefix}.w1.lora_B.weight"] == (128, 768, 8)
    assert tensors[f"{prefix}.w3.lora_B.weight"] == (128, 768, 8)
    # down (w2): B shared by all experts (they write the same hidden state).
    assert tensors[f"{prefix}.w2.lora_A.weight"] == (128, 8, 768)
    assert tensors[f"{prefix}.w2.lora_B.weight"] == (1, 2048, 8)
    assert not any(".mlp.gate_proj." in name for name in tensors)  # no dense MLP anywhere
    assert tensors["base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"] == (
        4 * 128,
        8,
    )
    assert layout.target_modules(model, FULL) == [
        "k_proj",
        "o_proj",
        "q_proj",
        "unembed_tokens",
        "v_proj",
        "w1",
        "w2",
        "w3",
    ]


def test_gpt_oss_experts_use_intermediate_size_and_every_layer_is_moe() -> None:
    model = shape("openai/gpt-oss-20b")
    experts = layout.expert_modules(model, FULL)
    assert len(experts) == 24 * 3
    assert experts["model.layers.23.mlp.experts.w2"] == layout.ExpertModule(
        32, 2880, 2880, False, True
    )
    assert layout.adapter_modules(model, FULL)["model.layers.0.attn.q_proj"] == (
        2880,
        64 * 64,
    )


def test_dense_and_moe_layers_follow_the_sparse_step_and_dense_layer_list() -> None:
    config = {
        "model_type": "qwen3_moe",
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "vocab_size": 50,
        "max_position_embeddings": 512,
        "num_experts": 3,
        "moe_intermediate_size": 8,
        "decoder_sparse_step": 2,
        "mlp_only_layers": [3],
    }
    model = catalog.shape_from_config(config, "test/sparse")
    assert model.moe_layers == (False, True, False, False)
    # Omitted keys take the architecture's defaults as transformers fills them: Qwen3MoeConfig
    # has no head_dim (hidden // heads) and 4 key/value heads (store/config_defaults.py).
    assert model.head_dim == 16 and model.num_key_value_heads == 4
    paths = [*layout.adapter_modules(model, FULL), *layout.expert_modules(model, FULL)]
    assert "model.layers.1.mlp.experts.w1" in paths
    assert "model.layers.0.mlp.gate_proj" in paths and "model.layers.3.mlp.gate_proj" in paths
    assert "model.layers.1.mlp.gate_proj" not in paths


def test_moe_live_state_has_the_stacked_shapes(tmp_path: Path) -> None:
    config = {
        "model_type": "qwen3_5_moe_text",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 8,
        "layer_types": ["linear_attention", "full_attention"],
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "linear_key_head_dim": 4,
        "linear_value_head_dim": 4,
        "num_experts": 3,
        "moe_intermediate_size": 8,
        "shared_expert_intermediate_size": 8,
        "vocab_size": 40,
        "max_position_embeddings": 1024,
    }
    model = catalog.shape_from_config(config, "test/hybrid-moe")
    lora.init_state(tmp_path, model.name, models.LoraConfig(rank=2, seed=1), model)
    adapter = load_file(tmp_path / lora.ADAPTER_MODEL)
    assert {name: tensor.shape for name, tensor in adapter.items()} == tensor_shapes(
        model, models.LoraConfig(rank=2)
    )
    w1_a = adapter["base_model.model.model.layers.1.mlp.experts.w1.lora_A.weight"]
    assert w1_a.shape == (1, 2, 32) and w1_a.any() and np.abs(w1_a).max() <= 1 / np.sqrt(32)
    assert not adapter["base_model.model.model.layers.1.mlp.experts.w1.lora_B.weight"].any()
    moments = load_file(tmp_path / lora.OPTIMIZER_STATE)
    assert moments[
        "base_model.model.model.layers.0.mlp.experts.w2.lora_A.weight.exp_avg"
    ].shape == (
        3,
        2,
        8,
    )
    written = lora.read_adapter_config(tmp_path)
    assert written["target_modules"] == sorted(
        {
            "in_proj_q",
            "in_proj_k",
            "in_proj_v",
            "in_proj_z",
            "out_proj",
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
            "w1",
            "w2",
            "w3",
            "unembed_tokens",
        }
    )
    with open(tmp_path / lora.ADAPTER_MODEL, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        names = [n for n in json.loads(handle.read(length)) if n != "__metadata__"]
    assert names == sorted(names)


# -- names and errors -----------------------------------------------------------------------


def test_unknown_name_names_the_closest_known_ones() -> None:
    with pytest.raises(NotFoundError) as caught:
        catalog.default_catalog().require("qwen/qwen3-8B")
    message = str(caught.value)
    assert message.startswith(
        "base model 'qwen/qwen3-8B' is not supported by this server; did you mean Qwen/Qwen3-8B,"
    )
    assert "--model-config" in message
    assert catalog.default_catalog().closest("META-LLAMA/llama-3.2-3b")[0] == (
        "meta-llama/Llama-3.2-3B"
    )
    with pytest.raises(NotFoundError, match=re.escape("(an operator adds models")):
        catalog.default_catalog().require("zzzz-nothing-alike")


def test_a_config_file_adds_a_model(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "_name_or_path": "acme/small-llama",
                "model_type": "llama",
                "hidden_size": 48,
                "intermediate_size": 96,
                "num_hidden_layers": 3,
                "num_attention_heads": 4,
                "vocab_size": 77,
                "max_position_embeddings": 8192,
            }
        )
    )
    extended = catalog.load_catalog([str(path), f"acme/renamed={path}"])
    assert extended.names()[-2:] == ["acme/small-llama", "acme/renamed"]
    added = extended.require("acme/renamed")
    assert (added.hidden_size, added.head_dim, added.num_key_value_heads) == (48, 12, 4)
    assert added.source == str(path)
    assert "acme/small-llama" not in catalog.default_catalog()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "is not valid JSON"),
        ("[]", "is not a JSON object"),
        ('{"model_type": "llama", "hidden_size": 8}', "has no _name_or_path"),
    ],
)
def test_bad_config_files_are_usage_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=re.escape(message)):
        catalog.load_catalog([str(path)])


def test_incomplete_or_unshapeable_configs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no positive integer 'vocab_size'"):
        catalog.shape_from_config(
            {
                "hidden_size": 8,
                "intermediate_size": 8,
                "num_hidden_layers": 1,
                "num_attention_heads": 1,
                "max_position_embeddings": 8,
            },
            "x/y",
        )
    with pytest.raises(UsageError, match="multi-head latent attention"):
        catalog.shape_from_config({"model_type": "deepseek_v3", "kv_lora_rank": 512}, "x/mla")
    with pytest.raises(UsageError, match="cannot read model config"):
        catalog.load_catalog([str(tmp_path / "missing.json")])
    with pytest.raises(UsageError, match="must be PATH or NAME=PATH"):
        catalog.load_catalog(["=nothing"])
