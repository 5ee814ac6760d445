"""Which modules a LoRA adapter covers on a base model, and the shape of each tensor.

Names and shapes are those of the service's raw format (docs/protocol.md §7.3; the
per-family rules and where each comes from are in families.py):

* attention: ``self_attn.{q,k,v,o}_proj`` (``attn.`` for GPT-OSS); in the gated families
  (Qwen3.5, Qwen3-Next) ``q_proj`` also produces the output gate, so it is twice as wide;
* Gated DeltaNet linear attention (Qwen3.5): ``linear_attn.{in_proj_q,in_proj_k,in_proj_v,
  in_proj_z,out_proj}``, the fused ``in_proj_qkv`` split as the service trains it;
* dense MLP: ``mlp.{gate,up,down}_proj``; a shared expert: ``mlp.shared_expert.*``;
* routed experts: one stacked tensor per projection for all experts, ``mlp.experts.w1``
  (gate), ``w3`` (up) and ``w2`` (down), shaped ``(experts, …)``. The input side of
  ``w1``/``w3`` (A) and the output side of ``w2`` (B) are shared by all experts (leading
  dimension 1), since every expert reads and writes the same hidden state; converters
  broadcast them (tinker-cookbook weights/_merge.py:257-290, expand_expert_lora_tensors);
* ``model.unembed_tokens`` for the unembedding (converters map it to ``lm_head``, or to
  ``embed_tokens`` when embeddings are tied).
"""

from __future__ import annotations

from dataclasses import dataclass

from logits_cli import models
from logits_cli.store.catalog import LINEAR_ATTENTION, ModelShape
from logits_cli.store.families import UNEMBED_MODULE, family_for, linear_attention_projections

TENSOR_PREFIX = "base_model.model."


@dataclass(frozen=True)
class ExpertModule:
    """The routed experts' projection of one layer, as one stacked LoRA pair."""

    experts: int
    in_features: int
    out_features: int
    shared_a: bool  # one A matrix for every expert (leading dimension 1)
    shared_b: bool

    def a_shape(self, rank: int) -> tuple[int, int, int]:
        return (1 if self.shared_a else self.experts, rank, self.in_features)

    def b_shape(self, rank: int) -> tuple[int, int, int]:
        return (1 if self.shared_b else self.experts, self.out_features, rank)


def _attention(shape: ModelShape, layer: int) -> list[tuple[str, int, int]]:
    hidden = shape.hidden_size
    family = family_for(shape.arch)
    if shape.layer_type(layer) == LINEAR_ATTENTION:
        projections = linear_attention_projections(
            family,
            hidden,
            key_width=shape.linear_num_key_heads * shape.linear_key_head_dim,
            value_width=shape.linear_num_value_heads * shape.linear_value_head_dim,
            value_heads=shape.linear_num_value_heads,
        )
        return [(f"linear_attn.{name}", i, o) for name, i, o in projections]
    query_width = shape.num_attention_heads * shape.head_dim
    kv_width = shape.num_key_value_heads * shape.head_dim
    attn = family.attention
    return [
        (f"{attn}.q_proj", hidden, query_width * (2 if family.gated_query else 1)),
        (f"{attn}.k_proj", hidden, kv_width),
        (f"{attn}.v_proj", hidden, kv_width),
        (f"{attn}.o_proj", query_width, hidden),
    ]


def _gated_mlp(prefix: str, hidden: int, intermediate: int) -> list[tuple[str, int, int]]:
    return [
        (f"{prefix}.gate_proj", hidden, intermediate),
        (f"{prefix}.up_proj", hidden, intermediate),
        (f"{prefix}.down_proj", intermediate, hidden),
    ]


def _mlp(shape: ModelShape, layer: int) -> list[tuple[str, int, int]]:
    if not shape.is_moe_layer(layer):
        return _gated_mlp("mlp", shape.hidden_size, shape.intermediate_size)
    if shape.shared_expert_intermediate_size:
        return _gated_mlp(
            "mlp.shared_expert", shape.hidden_size, shape.shared_expert_intermediate_size
        )
    return []


def adapter_modules(shape: ModelShape, lora: models.LoraConfig) -> dict[str, tuple[int, int]]:
    """Module path -> (in_features, out_features) for every linear module the adapter covers
    (the routed experts are in ``expert_modules``)."""
    modules: dict[str, tuple[int, int]] = {}
    for layer in range(shape.num_layers):
        per_layer = (_attention(shape, layer) if lora.train_attn else []) + (
            _mlp(shape, layer) if lora.train_mlp else []
        )
        for suffix, in_features, out_features in per_layer:
            modules[f"model.layers.{layer}.{suffix}"] = (in_features, out_features)
    if lora.train_unembed:
        modules[UNEMBED_MODULE] = (shape.hidden_size, shape.vocab_size)
    return dict(sorted(modules.items()))


def expert_modules(shape: ModelShape, lora: models.LoraConfig) -> dict[str, ExpertModule]:
    """Module path -> stacked expert projection, for every mixture-of-experts layer."""
    if not lora.train_mlp:
        return {}
    hidden, width, experts = shape.hidden_size, shape.moe_intermediate_size, shape.num_experts
    modules: dict[str, ExpertModule] = {}
    for layer in range(shape.num_layers):
        if not shape.is_moe_layer(layer):
            continue
        prefix = f"model.layers.{layer}.mlp.experts"
        modules[f"{prefix}.w1"] = ExpertModule(experts, hidden, width, True, False)
        modules[f"{prefix}.w3"] = ExpertModule(experts, hidden, width, True, False)
        modules[f"{prefix}.w2"] = ExpertModule(experts, width, hidden, False, True)
    return dict(sorted(modules.items()))


def target_modules(shape: ModelShape, lora: models.LoraConfig) -> list[str]:
    """The PEFT ``target_modules``: the sorted distinct module names (docs/protocol.md §7.2)."""
    paths = [*adapter_modules(shape, lora), *expert_modules(shape, lora)]
    return sorted({path.rsplit(".", 1)[-1] for path in paths})


def lora_tensor_shapes(shape: ModelShape, lora: models.LoraConfig) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of every ``lora_A``/``lora_B`` weight, sorted by name."""
    rank = lora.rank
    tensors: dict[str, tuple[int, ...]] = {}
    for module, (in_features, out_features) in adapter_modules(shape, lora).items():
        tensors[f"{TENSOR_PREFIX}{module}.lora_A.weight"] = (rank, in_features)
        tensors[f"{TENSOR_PREFIX}{module}.lora_B.weight"] = (out_features, rank)
    for module, expert in expert_modules(shape, lora).items():
        tensors[f"{TENSOR_PREFIX}{module}.lora_A.weight"] = expert.a_shape(rank)
        tensors[f"{TENSOR_PREFIX}{module}.lora_B.weight"] = expert.b_shape(rank)
    return dict(sorted(tensors.items()))


def parameter_count(shape: ModelShape, lora: models.LoraConfig) -> int:
    """How many numbers the adapter holds (its optimizer state holds twice as many)."""
    total = 0
    for tensor_shape in lora_tensor_shapes(shape, lora).values():
        count = 1
        for size in tensor_shape:
            count *= size
        total += count
    return total
