"""Our server's adapters are the service's raw format, checked without torch.

Two sources of fact about the service (tinker-cookbook 0.6.1; docs/protocol.md §7.3):

* the parameter counts the service itself reported at rank 1 for every base model and every
  combination of (train_mlp, train_attn, train_unembed), kept by the cookbook as
  ``_REFERENCE_PARAMS_PER_RANK`` in tests/downstream_compat/test_cli_and_hyperparam.py
  (copied below for the models of our catalog). A wrong module set, a wrong width or a
  per-expert tensor that should be shared changes the count;
* the names the cookbook's converters expect (``model.unembed_tokens``, GPT-OSS ``.attn.``,
  Qwen3.5 ``linear_attn.in_proj_q/k/v``, stacked ``mlp.experts.w1/w2/w3``).

The transformers side (every tensor fits a real module of a model built from a config of
its family) is tests/server/test_raw_adapter_families.py, in the torch venv.
"""

from __future__ import annotations

import pytest

from logits_cli import models
from logits_cli.errors import UsageError
from logits_cli.store import catalog, layout

# (train_mlp, train_attn, train_unembed) -> numbers at rank 1, as the service reported them.
SERVICE_PARAMS_AT_RANK_1: dict[str, dict[tuple[bool, bool, bool], int]] = {
    "Qwen/Qwen3-4B-Instruct-2507": {
        (True, True, True): 2_218_880,
        (True, True, False): 2_064_384,
        (True, False, True): 1_481_600,
        (True, False, False): 1_327_104,
        (False, True, True): 891_776,
        (False, True, False): 737_280,
        (False, False, True): 154_496,
    },
    "Qwen/Qwen3-8B": {
        (True, True, True): 2_883_968,
        (True, True, False): 2_727_936,
        (True, False, True): 1_925_504,
        (True, False, False): 1_769_472,
        (False, True, True): 1_114_496,
        (False, True, False): 958_464,
        (False, False, True): 156_032,
    },
    "Qwen/Qwen3-32B": {
        (True, True, True): 8_545_664,
        (True, True, False): 8_388_608,
        (True, False, True): 6_055_296,
        (True, False, False): 5_898_240,
        (False, True, True): 2_647_424,
        (False, True, False): 2_490_368,
        (False, False, True): 157_056,
    },
    "Qwen/Qwen3-30B-A3B": {
        (True, True, True): 15_440_256,
        (True, True, False): 15_286_272,
        (True, False, True): 14_604_672,
        (True, False, False): 14_450_688,
        (False, True, True): 989_568,
        (False, True, False): 835_584,
        (False, False, True): 153_984,
    },
    "Qwen/Qwen3-235B-A22B": {  # measured on Qwen/Qwen3-235B-A22B-Instruct-2507
        (True, True, True): 59_931_008,
        (True, True, False): 59_774_976,
        (True, False, True): 56_754_560,
        (True, False, False): 56_598_528,
        (False, True, True): 3_332_480,
        (False, True, False): 3_176_448,
        (False, False, True): 156_032,
    },
    "Qwen/Qwen3.5-4B": {
        (True, True, True): 2_278_400,
        (True, True, False): 2_027_520,
        (True, False, True): 1_381_376,
        (True, False, False): 1_130_496,
        (False, True, True): 1_147_904,
        (False, True, False): 897_024,
        (False, False, True): 250_880,
    },
    "Qwen/Qwen3.5-35B-A3B": {
        (True, True, True): 17_545_728,
        (True, True, False): 17_295_360,
        (True, False, True): 16_531_968,
        (True, False, False): 16_281_600,
        (False, True, True): 1_264_128,
        (False, True, False): 1_013_760,
        (False, False, True): 250_368,
    },
    "meta-llama/Llama-3.1-8B": {
        (True, True, True): 2_753_792,
        (True, True, False): 2_621_440,
        (True, False, True): 1_901_824,
        (True, False, False): 1_769_472,
        (False, True, True): 984_320,
        (False, True, False): 851_968,
        (False, False, True): 132_352,
    },
    "meta-llama/Llama-3.1-70B": {
        (True, True, True): 13_079_808,
        (True, True, False): 12_943_360,
        (True, False, True): 8_983_808,
        (True, False, False): 8_847_360,
        (False, True, True): 4_232_448,
        (False, True, False): 4_096_000,
        (False, False, True): 136_448,
    },
    "meta-llama/Llama-3.2-1B": {
        (True, True, True): 834_816,
        (True, True, False): 704_512,
        (True, False, True): 621_824,
        (True, False, False): 491_520,
        (False, True, True): 343_296,
        (False, True, False): 212_992,
        (False, False, True): 130_304,
    },
    "meta-llama/Llama-3.2-3B": {
        (True, True, True): 1_650_944,
        (True, True, False): 1_519_616,
        (True, False, True): 1_077_504,
        (True, False, False): 946_176,
        (False, True, True): 704_768,
        (False, True, False): 573_440,
        (False, False, True): 131_328,
    },
    "openai/gpt-oss-20b": {
        (True, True, True): 7_544_512,
        (True, True, False): 7_340_544,
        (True, False, True): 7_046_848,
        (True, False, False): 6_842_880,
        (False, True, True): 701_632,
        (False, True, False): 497_664,
        (False, False, True): 203_968,
    },
    "openai/gpt-oss-120b": {
        (True, True, True): 41_074_624,
        (True, True, False): 40_870_656,
        (True, False, True): 40_328_128,
        (True, False, False): 40_124_160,
        (False, True, True): 950_464,
        (False, True, False): 746_496,
        (False, False, True): 203_968,
    },
}


@pytest.mark.parametrize("name", sorted(SERVICE_PARAMS_AT_RANK_1))
def test_parameter_counts_equal_the_services(name: str) -> None:
    shape = catalog.default_catalog().require(name)
    for (mlp, attn, unembed), expected in SERVICE_PARAMS_AT_RANK_1[name].items():
        lora = models.LoraConfig(rank=1, train_mlp=mlp, train_attn=attn, train_unembed=unembed)
        assert layout.parameter_count(shape, lora) == expected, (mlp, attn, unembed)


def test_every_family_of_the_catalog_is_checked_against_the_service() -> None:
    checked = {catalog.default_catalog().require(name).arch for name in SERVICE_PARAMS_AT_RANK_1}
    shipped = {shape.arch for shape in catalog.default_catalog()}
    assert checked == shipped


def _names(name: str) -> dict[str, tuple[int, ...]]:
    shape = catalog.default_catalog().require(name)
    return layout.lora_tensor_shapes(shape, models.LoraConfig(rank=4))


def test_the_unembedding_is_unembed_tokens_in_every_family() -> None:
    for shape in catalog.default_catalog():
        tensors = layout.lora_tensor_shapes(shape, models.LoraConfig(rank=4))
        assert tensors["base_model.model.model.unembed_tokens.lora_A.weight"] == (
            4,
            shape.hidden_size,
        )
        assert tensors["base_model.model.model.unembed_tokens.lora_B.weight"] == (
            shape.vocab_size,
            4,
        )
        assert not any("lm_head" in name for name in tensors), shape.name


def test_gpt_oss_attention_is_attn() -> None:
    tensors = _names("openai/gpt-oss-20b")
    assert "base_model.model.model.layers.0.attn.q_proj.lora_A.weight" in tensors
    assert not any(".self_attn." in name for name in tensors)


def test_qwen35_linear_attention_is_split_and_unequal() -> None:
    tensors = _names("Qwen/Qwen3.5-4B")
    prefix = "base_model.model.model.layers.0.linear_attn"
    # 16 key heads of 128 for q and k, 32 value heads of 128 for v and z.
    assert tensors[f"{prefix}.in_proj_q.lora_B.weight"] == (16 * 128, 4)
    assert tensors[f"{prefix}.in_proj_k.lora_B.weight"] == (16 * 128, 4)
    assert tensors[f"{prefix}.in_proj_v.lora_B.weight"] == (32 * 128, 4)
    assert tensors[f"{prefix}.in_proj_z.lora_B.weight"] == (32 * 128, 4)
    assert not any(
        part in name for name in tensors for part in ("in_proj_qkv", "in_proj_a", "in_proj_b")
    )


def test_qwen35_gate_comes_from_the_architecture_not_a_config_key() -> None:
    config = {
        "model_type": "qwen3_5_text",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "layer_types": ["linear_attention", "full_attention"],
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "linear_key_head_dim": 8,
        "linear_value_head_dim": 8,
        "vocab_size": 100,
        "max_position_embeddings": 4096,
    }
    lora = models.LoraConfig(rank=2)
    for extra in ({}, {"attn_output_gate": False}):
        shape = catalog.shape_from_config({**config, **extra}, "test/qwen35")
        tensors = layout.lora_tensor_shapes(shape, lora)
        assert tensors["base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"] == (
            2 * 4 * 16,
            2,
        ), extra


def test_omitted_keys_take_the_defaults_transformers_fills() -> None:
    # What transformers 5.25 writes for Qwen3_5TextConfig(hidden_size=64, intermediate_size=96,
    # num_hidden_layers=4, num_attention_heads=4, vocab_size=128), its shape keys only.
    written = {
        "model_type": "qwen3_5_text",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "vocab_size": 128,
        "head_dim": 256,
        "num_key_value_heads": 4,
        "max_position_embeddings": 32768,
        "layer_types": ["linear_attention"] * 3 + ["full_attention"],
        "linear_key_head_dim": 128,
        "linear_num_key_heads": 16,
        "linear_num_value_heads": 32,
        "linear_value_head_dim": 128,
    }
    minimal = {key: written[key] for key in list(written)[:6]}
    lora = models.LoraConfig(rank=2)
    full_shapes = layout.lora_tensor_shapes(catalog.shape_from_config(written, "w"), lora)
    assert layout.lora_tensor_shapes(catalog.shape_from_config(minimal, "m"), lora) == full_shapes
    # The vision-language form names the text model's type on the outside only.
    wrapped = {"model_type": "qwen3_5", "text_config": {**minimal, "model_type": None}}
    assert layout.lora_tensor_shapes(catalog.shape_from_config(wrapped, "v"), lora) == full_shapes
    # The model's size is never guessed.
    with pytest.raises(UsageError, match="hidden_size"):
        catalog.shape_from_config({"model_type": "qwen3_5_text"}, "empty")


def test_a_default_never_shadows_a_synonym() -> None:
    # Qwen3MoeConfig (transformers 5.25) writes its expert count as num_local_experts.
    config = {
        "model_type": "qwen3_moe",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 128,
        "num_local_experts": 4,
        "moe_intermediate_size": 32,
    }
    assert catalog.shape_from_config(config, "q").num_experts == 4
    del config["num_local_experts"]
    assert catalog.shape_from_config(config, "q").num_experts == 128  # Qwen3MoeConfig's default
