"""What ``ckpt export --format peft`` must know about a base model, and the per-family rules
that turn the service's raw adapter names into those of the Hugging Face model.

The rules are those of tinker-cookbook 0.6.1's ``build_lora_adapter`` (``weights/README.md``,
its remap table; ``_merge_utils.build_name_remaps``; ``_merge_qwen3_5.build_qwen3_5_name_remaps``;
``_merge_gpt_oss.detect_profile``; ``_adapter._UNSUPPORTED_MODEL_TYPES``), so that our export
equals the cookbook's tensor for tensor (tests/peft/). The cookbook reads them off the base
model's weight files; we need only its ``config.json`` and, where the names depend on it, the
tensor names of its checkpoint (``*.safetensors.index.json`` or a safetensors header).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logits_cli.errors import UnsupportedError, UsageError

# model_type -> why an export cannot be served, and what to do instead.
UNSERVABLE_MODEL_TYPES: dict[str, tuple[str, str]] = {
    "deepseek_v3": (
        "vLLM and SGLang serve no LoRA adapter for DeepSeek V3 (model_type deepseek_v3)",
        "merge the adapter into the base weights instead (tinker-cookbook's build_hf_model)",
    ),
}
# Families whose conversion needs rules we do not carry (fused projections, another prefix).
UNCONVERTED_MODEL_TYPES = ("nemotron_h", "kimi_k2", "kimi_k25")

# Raw expert projection -> Hugging Face name (README remap table: w1/w2/w3).
EXPERT_PROJECTIONS = (
    (".w1.weight", ".gate_proj.weight"),
    (".w3.weight", ".up_proj.weight"),
    (".w2.weight", ".down_proj.weight"),
)
RAW_PREFIX = "base_model.model."
MAX_INDEX_BYTES = 64 << 20  # a weight-map index or safetensors header; real ones are < 10 MB


@dataclass(frozen=True)
class BaseModelFacts:
    """The few facts the names depend on."""

    name: str  # written as base_model_name_or_path
    model_type: str
    architectures: tuple[str, ...]
    has_lm_head: bool  # False: embeddings tied, the unembedding LoRA goes to embed_tokens
    language_model_prefix: bool  # vision-language checkpoint: model.language_model.*
    source: str  # where the facts came from (catalog, a file, the Hub)

    @property
    def family(self) -> str:
        if any("GptOss" in arch for arch in self.architectures) or self.model_type == "gpt_oss":
            return "gpt_oss"
        if self.model_type in ("qwen3_5", "qwen3_5_moe"):
            return "qwen3_5"
        return "default"


# The models of our catalog (store/base_models.json), from their public config.json and
# weight index: architectures, tie_word_embeddings, and whether the weights sit under
# model.language_model. (Qwen3.5 checkpoints are vision-language). tests/peft checks that
# every catalog model is here.
_CATALOG: dict[str, tuple[str, str, bool, bool]] = {
    # name: (model_type, architecture, tied embeddings, language-model prefix)
    "Qwen/Qwen3-0.6B": ("qwen3", "Qwen3ForCausalLM", True, False),
    "Qwen/Qwen3-4B": ("qwen3", "Qwen3ForCausalLM", True, False),
    "Qwen/Qwen3-4B-Instruct-2507": ("qwen3", "Qwen3ForCausalLM", True, False),
    "Qwen/Qwen3-8B": ("qwen3", "Qwen3ForCausalLM", False, False),
    "Qwen/Qwen3-32B": ("qwen3", "Qwen3ForCausalLM", False, False),
    "Qwen/Qwen3-30B-A3B": ("qwen3_moe", "Qwen3MoeForCausalLM", False, False),
    "Qwen/Qwen3-235B-A22B": ("qwen3_moe", "Qwen3MoeForCausalLM", False, False),
    "Qwen/Qwen3.5-4B": ("qwen3_5", "Qwen3_5ForConditionalGeneration", True, True),
    "Qwen/Qwen3.5-35B-A3B": ("qwen3_5_moe", "Qwen3_5MoeForConditionalGeneration", False, True),
    "meta-llama/Llama-3.1-8B": ("llama", "LlamaForCausalLM", False, False),
    "meta-llama/Llama-3.1-70B": ("llama", "LlamaForCausalLM", False, False),
    "meta-llama/Llama-3.2-1B": ("llama", "LlamaForCausalLM", True, False),
    "meta-llama/Llama-3.2-3B": ("llama", "LlamaForCausalLM", True, False),
    "openai/gpt-oss-20b": ("gpt_oss", "GptOssForCausalLM", False, False),
    "openai/gpt-oss-120b": ("gpt_oss", "GptOssForCausalLM", False, False),
    "logits/tiny": ("llama", "LlamaForCausalLM", False, False),
}


def catalog_names() -> list[str]:
    return sorted(_CATALOG)


def catalog_facts(name: str) -> BaseModelFacts | None:
    entry = _CATALOG.get(name)
    if entry is None:
        return None
    model_type, architecture, tied, prefix = entry
    return BaseModelFacts(name, model_type, (architecture,), not tied, prefix, "catalog")


def facts_from_config(
    name: str, config: dict[str, Any], tensor_names: set[str] | None, source: str
) -> BaseModelFacts:
    """Facts from a ``config.json`` and, when known, the checkpoint's tensor names (which
    decide, as in the cookbook; the config alone otherwise)."""
    model_type = str(config.get("model_type") or "")
    architectures = tuple(str(a) for a in config.get("architectures") or ())
    if tensor_names:
        has_lm_head = any(
            k == "lm_head.weight" or k.endswith(".lm_head.weight") or k.startswith("lm_head.")
            for k in tensor_names
        )
        prefix = any(k.startswith("model.language_model.") for k in tensor_names)
    else:
        text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
        tied = config.get("tie_word_embeddings", (text or {}).get("tie_word_embeddings", False))
        has_lm_head = not bool(tied)
        prefix = isinstance(config.get("vision_config"), dict)
    return BaseModelFacts(name, model_type, architectures, has_lm_head, prefix, source)


def check_convertible(facts: BaseModelFacts) -> None:
    refusal = UNSERVABLE_MODEL_TYPES.get(facts.model_type)
    if refusal is not None:
        raise UnsupportedError(refusal[0], hint=refusal[1])
    if facts.model_type in UNCONVERTED_MODEL_TYPES:
        raise UnsupportedError(
            f"logits does not convert {facts.model_type} adapters",
            hint="use tinker-cookbook's build_lora_adapter",
        )


# -- names --------------------------------------------------------------------------------


def name_remaps(facts: BaseModelFacts) -> list[tuple[str, str]]:
    """Ordered ``str.replace`` pairs from a raw weight name to the model's parameter name."""
    remaps = [(RAW_PREFIX, "")]
    if facts.family == "qwen3_5":
        # Qwen3.5 puts the prefix first, then finds the unembedding under it.
        if facts.language_model_prefix:
            inner = "model.language_model."
            unembed = "lm_head" if facts.has_lm_head else f"{inner}embed_tokens"
            remaps += [("model.", inner), (f"{inner}unembed_tokens", unembed)]
        else:
            remaps.append(("model.unembed_tokens", "lm_head"))
        return remaps
    unembed = "lm_head" if facts.has_lm_head else "model.embed_tokens"
    remaps.append(("model.unembed_tokens", unembed))
    if facts.language_model_prefix:
        remaps.append(("model.", "model.language_model."))
    return remaps


def module_name(raw_weight_name: str, facts: BaseModelFacts) -> str:
    """``base_model.model.….weight`` (raw) -> the Hugging Face parameter name. Experts keep
    ``.experts`` without an index; ``per_expert_name`` adds it."""
    target = raw_weight_name
    for old, new in name_remaps(facts):
        target = target.replace(old, new)
    if facts.family == "gpt_oss":
        target = target.replace(".attn", ".self_attn")
    if ".experts" in raw_weight_name:
        for old, new in EXPERT_PROJECTIONS:
            target = target.replace(old, new)
    return target


def per_expert_name(target: str, expert: int) -> str:
    return target.replace(".experts", f".experts.{expert}")


# -- reading the base model's facts from files ----------------------------------------------


def read_json_file(path: Path, what: str) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_INDEX_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > MAX_INDEX_BYTES:
        raise UsageError(f"{what} {path} is too large to be one")
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise UsageError(f"{what} {path} is not JSON") from None
    if not isinstance(value, dict):
        raise UsageError(f"{what} {path} is not a JSON object")
    return value


def safetensors_names(path: Path) -> set[str]:
    """The tensor names of a safetensors file, from its header alone."""
    with path.open("rb") as file:
        head = file.read(8)
        if len(head) != 8:
            raise UsageError(f"{path} is not a safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_INDEX_BYTES:
            raise UsageError(f"{path} is not a safetensors file (header too large)")
        try:
            header = json.loads(file.read(length))
        except (ValueError, UnicodeDecodeError):
            raise UsageError(f"{path} is not a safetensors file") from None
    return {name for name in header if name != "__metadata__"}


def index_names(index: dict[str, Any]) -> set[str]:
    weight_map = index.get("weight_map")
    return set(weight_map) if isinstance(weight_map, dict) else set()


def facts_from_path(name: str | None, path: Path) -> BaseModelFacts:
    """``--base-config FILE|DIR``: a config.json, or a model directory holding one (and its
    ``*.safetensors.index.json`` or safetensors files, whose headers alone are read)."""
    if path.is_dir():
        config = read_json_file(path / "config.json", "base model config")
        tensor_names: set[str] = set()
        for index in sorted(path.glob("*.safetensors.index.json")):
            tensor_names |= index_names(read_json_file(index, "weight index"))
        if not tensor_names:
            for weights in sorted(path.glob("*.safetensors")):
                tensor_names |= safetensors_names(weights)
    else:
        config = read_json_file(path, "base model config")
        tensor_names = set()
    label = name or str(config.get("_name_or_path") or path)
    return facts_from_config(label, config, tensor_names or None, f"base config {path}")
