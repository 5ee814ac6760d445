"""What a ``config.json`` leaves out: each architecture's defaults, as transformers fills them.

A config may omit keys (written by hand, trimmed, or by a transformers release that wrote only
the difference from the class defaults); transformers then builds the model with its
configuration class's defaults, and the adapter must fit that model. So shapes come from the
architecture (``model_type``): these are the defaults of the configuration classes of
transformers 5.25.0 for the keys that decide LoRA shapes (file and line beside each family).
Only absent keys are filled, and never the model's size (hidden size, layers, heads,
vocabulary), listed here for the record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_QWEN3_5_LINEAR = {
    "linear_key_head_dim": 128,
    "linear_value_head_dim": 128,
    "linear_num_key_heads": 16,
    "linear_num_value_heads": 32,
}

_DEFAULTS: dict[str, dict[str, Any]] = {
    # llama/configuration_llama.py:63-83 (num_key_value_heads and head_dim derived, :86-89)
    "llama": {
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "max_position_embeddings": 2048,
    },
    # qwen3/configuration_qwen3.py:61-69
    "qwen3": {
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 22016,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "head_dim": 128,
        "max_position_embeddings": 32768,
    },
    # qwen3_moe/configuration_qwen3_moe.py:77-101 (no head_dim field: the model code falls
    # back to hidden_size // num_attention_heads)
    "qwen3_moe": {
        "vocab_size": 151936,
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "num_hidden_layers": 24,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "max_position_embeddings": 32768,
        "decoder_sparse_step": 1,
        "moe_intermediate_size": 768,
        "num_experts": 128,
    },
    # qwen3_5/configuration_qwen3_5.py:81-101
    "qwen3_5_text": {
        "vocab_size": 248320,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 32,
        "num_attention_heads": 16,
        "num_key_value_heads": 4,
        "max_position_embeddings": 32768,
        "head_dim": 256,
        **_QWEN3_5_LINEAR,
    },
    # qwen3_5_moe/configuration_qwen3_5_moe.py:85-108
    "qwen3_5_moe_text": {
        "vocab_size": 248320,
        "hidden_size": 2048,
        "num_hidden_layers": 40,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "head_dim": 256,
        **_QWEN3_5_LINEAR,
        "moe_intermediate_size": 512,
        "shared_expert_intermediate_size": 512,
        "num_experts": 256,
    },
    # gpt_oss/configuration_gpt_oss.py:51-63
    "gpt_oss": {
        "num_hidden_layers": 36,
        "num_local_experts": 128,
        "vocab_size": 201088,
        "hidden_size": 2880,
        "intermediate_size": 2880,
        "head_dim": 64,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
    },
}
# Never filled: a config without its model's size is far more often a mistake than a diff
# against the class, and a guessed 7B model would start a server on the wrong shapes; such a
# config is refused by name (catalog.shape_from_config).
_NEVER_FILLED = {"hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"}
# One number under several names (transformers' attribute_map: Qwen3MoeConfig writes
# num_local_experts for num_experts): a default never shadows a synonym that is present.
_SYNONYMS = [{"num_experts", "num_local_experts", "n_routed_experts"}]
# A vision-language config's own model_type names its text model's (configuration_qwen3_5.py
# :56 and :170; configuration_qwen3_5_moe.py:56 and :179).
_TEXT_MODEL_TYPES = {"qwen3_5": "qwen3_5_text", "qwen3_5_moe": "qwen3_5_moe_text"}
# Qwen3.5 hybrids: every full_attention_interval-th layer (default 4) is full attention, the
# others linear (configuration_qwen3_5.py:111-116; configuration_qwen3_5_moe.py:124-130).
_INTERVAL_LAYER_TYPES = {"qwen3_5_text", "qwen3_5_moe_text"}


def text_model_type(model_type: str) -> str:
    return _TEXT_MODEL_TYPES.get(model_type, model_type)


def with_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` (already flattened to its text model) with its architecture's defaults."""
    filled = dict(config)
    model_type = text_model_type(str(filled.get("model_type") or ""))
    if model_type:
        filled["model_type"] = model_type
    for key, value in _DEFAULTS.get(model_type, {}).items():
        synonyms = next((group for group in _SYNONYMS if key in group), {key})
        if key not in _NEVER_FILLED and all(filled.get(name) is None for name in synonyms):
            filled[key] = value
    if model_type in _INTERVAL_LAYER_TYPES and not filled.get("layer_types"):
        layers = filled.get("num_hidden_layers")
        interval = filled.get("full_attention_interval") or 4
        if isinstance(layers, int) and isinstance(interval, int) and interval > 0:
            filled["layer_types"] = [
                "linear_attention" if (layer + 1) % interval else "full_attention"
                for layer in range(layers)
            ]
    return filled
