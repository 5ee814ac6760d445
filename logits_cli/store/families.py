"""How each model family's adapter is named and shaped in the service's raw format.

The service (Tinker) writes a LoRA adapter with its own module names, not those of the
Hugging Face model code; converters such as tinker-cookbook's ``build_lora_adapter`` rename
them. The rules here decide our server's names and shapes, from the architecture
(``model_type``) alone, never from optional config keys a ``config.json`` may omit. Each rule
says where the fact comes from; docs/protocol.md §7.3 has the table.
"""

from __future__ import annotations

from dataclasses import dataclass

# The unembedding LoRA: "model.unembed_tokens" in every family. Converters map it to
# "lm_head", or to "model.embed_tokens" when embeddings are tied (tinker-cookbook 0.6.1
# weights/_merge_utils.py:109-117, build_name_remaps; weights/README.md "Key Remapping").
UNEMBED_MODULE = "model.unembed_tokens"


@dataclass(frozen=True)
class Family:
    """The naming and shape rules of one architecture family."""

    # The attention module of a layer: "self_attn", or "attn" for GPT-OSS (cookbook
    # weights/_merge_gpt_oss.py:49, extra_key_remaps ".attn" -> ".self_attn").
    attention: str = "self_attn"
    # q_proj also produces the output gate, so it is twice as wide as the heads: Qwen3.5
    # and Qwen3-Next always build it so (transformers 5.25 qwen3_5/modeling_qwen3_5.py:836-838,
    # qwen3_next/modeling_qwen3_next.py:241-243); no config key turns it off.
    gated_query: bool = False
    # Gated DeltaNet input projections of a linear-attention layer, as the service trains
    # them: Qwen3.5 splits the fused in_proj_qkv into in_proj_q/k/v (cookbook
    # weights/README.md "Qwen3.5 / Qwen3.6 Split QKV"; weights/_merge_qwen3_5.py:26-30).
    linear_projections: str = "split_qkv"


DEFAULT = Family()
GPT_OSS = Family(attention="attn")
QWEN3_5 = Family(gated_query=True, linear_projections="split_qkv")
# Qwen3-Next fuses its DeltaNet projections (in_proj_qkvz, in_proj_ba: transformers
# qwen3_next/modeling_qwen3_next.py:673-674). The service's names for it are not attested by
# the cookbook; the Hugging Face names are kept.
QWEN3_NEXT = Family(gated_query=True, linear_projections="fused_qkvz")

# Vision-language configs put the language model under text_config; catalog.py flattens
# them, so both the outer and the text model_type name the family.
_FAMILIES: dict[str, Family] = {
    "gpt_oss": GPT_OSS,
    "qwen3_5": QWEN3_5,
    "qwen3_5_text": QWEN3_5,
    "qwen3_5_moe": QWEN3_5,
    "qwen3_5_moe_text": QWEN3_5,
    "qwen3_next": QWEN3_NEXT,
}


def family_for(model_type: str) -> Family:
    """The rules of ``model_type``; other families (Llama, Qwen3, Qwen3 MoE) use the default."""
    return _FAMILIES.get(model_type, DEFAULT)


def linear_attention_projections(
    family: Family, hidden: int, key_width: int, value_width: int, value_heads: int
) -> list[tuple[str, int, int]]:
    """(name, in_features, out_features) of the LoRA modules of a Gated DeltaNet layer.

    Qwen3.5: in_proj_q and in_proj_k (key heads x key dim each), in_proj_v (value heads x
    value dim, so of another width when the head counts differ), in_proj_z and out_proj;
    the service trains no LoRA on in_proj_a / in_proj_b. The parameter counts the service
    reports (tinker-cookbook tests/downstream_compat/test_cli_and_hyperparam.py,
    _REFERENCE_PARAMS_PER_RANK for Qwen/Qwen3.5-4B and Qwen/Qwen3.5-35B-A3B) equal exactly
    this set; tests/store/test_raw_format.py checks them.
    """
    if family.linear_projections == "fused_qkvz":
        projections = [
            ("in_proj_qkvz", hidden, 2 * key_width + 2 * value_width),
            ("in_proj_ba", hidden, 2 * value_heads),
        ]
    else:
        projections = [
            ("in_proj_q", hidden, key_width),
            ("in_proj_k", hidden, key_width),
            ("in_proj_v", hidden, value_width),
            ("in_proj_z", hidden, value_width),
        ]
    projections.append(("out_proj", value_width, hidden))
    return projections
