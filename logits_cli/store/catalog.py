"""The base-model catalog: which base models a server offers and their dimensions.

The catalog is data: ``base_models.json`` beside this module holds every base model the
service offers, each as the fields of its public Hugging Face ``config.json`` that decide LoRA
shapes, with the file it came from. An operator adds models from their own ``config.json``
files (``logits server start --model-config``); both go through ``shape_from_config``.
An unknown name is refused with the nearest known names (docs/protocol.md §5.3).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from logits_cli.errors import NotFoundError, UsageError
from logits_cli.store.config_defaults import with_defaults

CATALOG_FILE = Path(__file__).with_name("base_models.json")
_MAX_CONFIG_BYTES = 4 << 20  # a config.json is a few kB; a vision model's a few hundred
FULL_ATTENTION = "full_attention"
LINEAR_ATTENTION = "linear_attention"
_ATTENTION_KINDS = {FULL_ATTENTION, "sliding_attention", "attention", LINEAR_ATTENTION}
# Multi-head latent attention (q_a_proj, kv_a_proj_with_mqa, …) has other modules entirely.
_LATENT_ATTENTION_KEYS = ("kv_lora_rank", "q_lora_rank")


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a base model that decide its LoRA tensor shapes.

    ``layer_types`` names each layer's token mixer (``full_attention``, ``sliding_attention``
    or ``linear_attention``); ``moe_layers`` marks the layers whose MLP is a mixture of
    experts. Empty tuples mean "every layer full attention" and "no experts". What follows
    from the architecture alone (an output-gated query, the attention module's name, how
    linear attention is projected) is looked up from ``arch`` in families.py, never read
    from optional config keys.
    """

    name: str
    arch: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    max_context_length: int
    layer_types: tuple[str, ...] = ()
    linear_num_key_heads: int = 0
    linear_num_value_heads: int = 0
    linear_key_head_dim: int = 0
    linear_value_head_dim: int = 0
    num_experts: int = 0
    moe_intermediate_size: int = 0
    moe_layers: tuple[bool, ...] = ()
    shared_expert_intermediate_size: int = 0
    source: str = ""

    def layer_type(self, layer: int) -> str:
        return self.layer_types[layer] if self.layer_types else FULL_ATTENTION

    def is_moe_layer(self, layer: int) -> bool:
        return bool(self.moe_layers) and self.moe_layers[layer]


def _int(config: Mapping[str, Any], key: str, name: str) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UsageError(f"config of {name} has no positive integer {key!r}")
    return value


def _optional_int(config: Mapping[str, Any], name: str, *keys: str) -> int:
    for key in keys:
        if config.get(key) is not None:
            return _int(config, key, name)
    return 0


def _text_config(config: Mapping[str, Any]) -> dict[str, Any]:
    # Vision-language configs (Qwen3.5, Qwen3-VL) nest the language model's dimensions.
    text = config.get("text_config")
    if isinstance(text, Mapping):
        # A text_config without its own model_type is named by the outer one
        # (config_defaults.text_model_type maps it).
        return {**config, **text, "model_type": text.get("model_type") or config.get("model_type")}
    return dict(config)


def _moe_layers(config: Mapping[str, Any], num_layers: int, num_experts: int) -> tuple[bool, ...]:
    if not num_experts:
        return ()
    dense = set(config.get("mlp_only_layers") or ())
    step = config.get("decoder_sparse_step") or 1
    first_dense = config.get("first_k_dense_replace") or 0
    return tuple(
        layer not in dense and layer >= first_dense and (layer + 1) % step == 0
        for layer in range(num_layers)
    )


def shape_from_config(config: Mapping[str, Any], name: str, source: str = "") -> ModelShape:
    """A ``ModelShape`` from the fields of a Hugging Face ``config.json``.

    UsageError for a config that lacks a needed dimension or describes modules this server
    cannot shape (multi-head latent attention).
    """
    config = with_defaults(_text_config(config))
    arch = str(config.get("model_type") or "unknown")
    if any(config.get(key) for key in _LATENT_ATTENTION_KEYS):
        raise UsageError(
            f"config of {name} uses multi-head latent attention ({arch}), "
            "which this server cannot shape yet"
        )
    hidden = _int(config, "hidden_size", name)
    num_layers = _int(config, "num_hidden_layers", name)
    heads = _int(config, "num_attention_heads", name)
    kv_heads = _optional_int(config, name, "num_key_value_heads") or heads
    head_dim = _optional_int(config, name, "head_dim") or hidden // heads
    num_experts = _optional_int(
        config, name, "num_experts", "num_local_experts", "n_routed_experts"
    )
    # gpt-oss sizes its experts with intermediate_size; it has no dense MLP layers.
    moe_intermediate = _optional_int(config, name, "moe_intermediate_size")
    if num_experts and not moe_intermediate:
        moe_intermediate = _int(config, "intermediate_size", name)
    moe_layers = _moe_layers(config, num_layers, num_experts)
    needs_dense_mlp = not moe_layers or not all(moe_layers)
    intermediate = (
        _int(config, "intermediate_size", name)
        if needs_dense_mlp
        else _optional_int(config, name, "intermediate_size")
    )

    layer_types = tuple(str(kind) for kind in config.get("layer_types") or ())
    if layer_types and len(layer_types) != num_layers:
        raise UsageError(
            f"config of {name} lists {len(layer_types)} layer_types for {num_layers} layers"
        )
    unknown = sorted(set(layer_types) - _ATTENTION_KINDS)
    if unknown:
        raise UsageError(f"config of {name} has an unknown layer type {unknown[0]!r}")
    linear = LINEAR_ATTENTION in layer_types
    return ModelShape(
        name=name,
        arch=arch,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=_int(config, "vocab_size", name),
        max_context_length=_int(config, "max_position_embeddings", name),
        layer_types=layer_types if any(k != FULL_ATTENTION for k in layer_types) else (),
        linear_num_key_heads=_int(config, "linear_num_key_heads", name) if linear else 0,
        linear_num_value_heads=_int(config, "linear_num_value_heads", name) if linear else 0,
        linear_key_head_dim=_int(config, "linear_key_head_dim", name) if linear else 0,
        linear_value_head_dim=_int(config, "linear_value_head_dim", name) if linear else 0,
        num_experts=num_experts,
        moe_intermediate_size=moe_intermediate,
        moe_layers=moe_layers,
        shared_expert_intermediate_size=(
            _optional_int(config, name, "shared_expert_intermediate_size") if num_experts else 0
        ),
        source=source,
    )


class Catalog:
    """Base models by name, in catalog order; lookups are exact, suggestions case-insensitive."""

    def __init__(self, shapes: Iterable[ModelShape]) -> None:
        self._shapes: dict[str, ModelShape] = {}
        for shape in shapes:
            self._shapes[shape.name] = shape

    def __iter__(self) -> Iterator[ModelShape]:
        return iter(self._shapes.values())

    def __contains__(self, name: object) -> bool:
        return name in self._shapes

    def __len__(self) -> int:
        return len(self._shapes)

    def names(self) -> list[str]:
        return list(self._shapes)

    def get(self, name: str) -> ModelShape | None:
        return self._shapes.get(name)

    def closest(self, name: str, limit: int = 3) -> list[str]:
        """Known names nearest to ``name``, ignoring case (difflib's ratio)."""
        by_folded = {known.casefold(): known for known in self._shapes}
        matches = difflib.get_close_matches(name.casefold(), by_folded, n=limit, cutoff=0.5)
        return [by_folded[match] for match in matches]

    def require(self, name: str) -> ModelShape:
        """The shape of ``name``, or NotFoundError naming the closest known models."""
        shape = self._shapes.get(name)
        if shape is not None:
            return shape
        nearest = self.closest(name)
        hint = f"; did you mean {', '.join(nearest)}?" if nearest else ""
        raise NotFoundError(
            f"base model {name!r} is not supported by this server{hint} "
            "(an operator adds models with `logits server start --model-config PATH`)"
        )

    def with_models(self, shapes: Iterable[ModelShape]) -> Catalog:
        """A new catalog with ``shapes`` added; a name already known is replaced."""
        return Catalog([*self._shapes.values(), *shapes])


def _catalog_entries(document: Any) -> list[ModelShape]:
    shapes = []
    for entry in document["models"]:
        shapes.append(shape_from_config(entry["config"], entry["name"], entry.get("source", "")))
    return shapes


@cache
def default_catalog() -> Catalog:
    """The catalog shipped in the package."""
    return Catalog(_catalog_entries(json.loads(CATALOG_FILE.read_text(encoding="utf-8"))))


def read_config_file(path: Path) -> dict[str, Any]:
    """A ``config.json`` as a dict; UsageError for a missing, oversized or malformed file."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read model config {str(path)!r}: {exc.strerror}") from None
    if len(data) > _MAX_CONFIG_BYTES:
        raise UsageError(f"model config {str(path)!r} is larger than a config.json can be")
    try:
        config = json.loads(data)
    except ValueError:
        raise UsageError(f"model config {str(path)!r} is not valid JSON") from None
    if not isinstance(config, dict):
        raise UsageError(f"model config {str(path)!r} is not a JSON object")
    return config


def parse_model_config_option(value: str) -> tuple[str | None, Path]:
    """``NAME=PATH`` or ``PATH`` (the name then comes from the file's ``_name_or_path``)."""
    name, separator, path = value.partition("=")
    if not separator:
        return None, Path(value)
    if not name or not path:
        raise UsageError(f"--model-config {value!r} must be PATH or NAME=PATH")
    return name, Path(path)


def shape_from_config_file(name: str | None, path: Path) -> ModelShape:
    config = read_config_file(path)
    if name is None:
        name = config.get("_name_or_path")
        if not isinstance(name, str) or not name.strip():
            raise UsageError(
                f"model config {str(path)!r} has no _name_or_path; name it with NAME={path}"
            )
        name = name.strip()
    return shape_from_config(config, name, source=str(path))


def load_catalog(model_configs: Iterable[str] = ()) -> Catalog:
    """The shipped catalog plus the models of ``--model-config`` values (NAME=PATH or PATH)."""
    extra = [shape_from_config_file(*parse_model_config_option(v)) for v in model_configs]
    catalog = default_catalog()
    return catalog.with_models(extra) if extra else catalog
