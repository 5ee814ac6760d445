"""``ckpt export --format peft``: the service's raw LoRA adapter as a standard PEFT adapter
that vLLM (``--lora-modules``), SGLang (``--lora-paths``) and ``peft`` load.

What it does equals tinker-cookbook 0.6.1's ``build_lora_adapter`` (names by the rules of
``peft_families``; stacked expert tensors expanded to one 2-D pair per expert, a shared A or
B repeated; unscaled tensors; the same ``adapter_config.json``), without torch and without the
base model's weights: tensors are copied one at a time (``safetensors_stream``). The output
directory is built beside OUT and renamed into place; ``.logits-export.json`` records the
source checkpoint, its digest and the conversion. The optimizer state is never read.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logits_cli import __version__, models
from logits_cli.api import peft_families as families
from logits_cli.api.safetensors_stream import (
    FLOAT_DTYPES,
    OutputTensor,
    TensorInfo,
    read_header,
    write_safetensors,
)
from logits_cli.api.verify import MANIFEST_NAME, read_manifest
from logits_cli.diskio import fsync_directory
from logits_cli.errors import ConflictError, IntegrityError, UsageError

ADAPTER_MODEL = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
EXPORT_MANIFEST = ".logits-export.json"


@dataclass(frozen=True)
class RawCheckpoint:
    """A checkpoint directory a download made: its manifest and raw adapter."""

    path: Path
    manifest: models.LocalManifest
    adapter_config: dict[str, Any]

    @property
    def base_model(self) -> str | None:
        name = self.adapter_config.get("base_model_name_or_path") or self.adapter_config.get(
            "base_model"
        )
        return str(name) if name else None


def open_checkpoint(path: Path) -> RawCheckpoint:
    """SRC as a downloaded checkpoint; one line when it is not one."""
    if not path.is_dir():
        raise UsageError(f"{path} is not a directory")
    if not (path / MANIFEST_NAME).is_file():
        raise UsageError(f"{path} is not a downloaded checkpoint (no {MANIFEST_NAME})")
    manifest = read_manifest(path)
    if not (path / ADAPTER_MODEL).is_file() or not (path / ADAPTER_CONFIG).is_file():
        raise UsageError(f"{path} holds no LoRA adapter ({ADAPTER_MODEL}, {ADAPTER_CONFIG})")
    config = families.read_json_file(path / ADAPTER_CONFIG, "adapter config")
    for key in ("r", "lora_alpha"):
        if not isinstance(config.get(key), int | float):
            raise IntegrityError(f"{path / ADAPTER_CONFIG} has no {key}")
    return RawCheckpoint(path, manifest, config)


@dataclass(frozen=True)
class PeftPlan:
    tensors: list[OutputTensor]
    target_modules: list[str]


def plan_conversion(
    raw: dict[str, TensorInfo], facts: families.BaseModelFacts, dtype: str | None = None
) -> PeftPlan:
    """Every output tensor, named and placed, before a byte is written."""
    out: dict[str, OutputTensor] = {}
    modules: set[str] = set()

    def add(module_path: str, a: TensorInfo, b: TensorInfo) -> None:
        key_a = f"{families.RAW_PREFIX}{module_path}.lora_A.weight"
        if key_a in out:
            raise IntegrityError(f"two raw tensors map to {key_a}: not an adapter of this model")
        out[key_a] = OutputTensor(key_a, a, dtype or a.dtype)
        key_b = key_a.replace(".lora_A.", ".lora_B.")
        out[key_b] = OutputTensor(key_b, b, dtype or b.dtype)
        modules.add(module_path.rsplit(".", 1)[-1])

    for key in sorted(raw):
        if ".lora_A" not in key:
            continue
        a, b = raw[key], raw.get(key.replace(".lora_A", ".lora_B"))
        if b is None:
            raise IntegrityError(f"{key} has no lora_B")
        weight_name = key.replace(".lora_A", "")
        target = families.module_name(weight_name, facts)
        if ".experts" not in weight_name:
            add(target.removesuffix(".weight"), a, b)
            continue
        if a.nbytes == 0 and b.nbytes == 0:
            continue  # a placeholder for a projection the model does not have
        if len(a.shape) != 3 or len(b.shape) != 3:
            raise IntegrityError(f"{key}: expert tensors must be 3-D, got {a.shape}, {b.shape}")
        experts = max(a.shape[0], b.shape[0])
        if a.shape[0] not in (1, experts) or b.shape[0] not in (1, experts) or experts == 1:
            raise IntegrityError(f"{key}: expert counts {a.shape[0]} and {b.shape[0]} differ")
        for expert in range(experts):
            add(
                families.per_expert_name(target, expert).removesuffix(".weight"),
                a.slice_of_first_axis(expert if a.shape[0] > 1 else 0),
                b.slice_of_first_axis(expert if b.shape[0] > 1 else 0),
            )
    if not out:
        raise IntegrityError("the adapter holds no LoRA tensors")
    return PeftPlan(list(out.values()), sorted(modules))


def peft_config(raw_config: dict[str, Any], base_model: str, plan: PeftPlan) -> dict[str, Any]:
    """The cookbook's ``adapter_config.json`` (no fused projections in our families, so the
    patterns are empty)."""
    return {
        "peft_type": "LORA",
        "auto_mapping": None,
        "base_model_name_or_path": base_model,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "lora_alpha": raw_config["lora_alpha"],
        "lora_dropout": 0.0,
        "modules_to_save": None,
        "r": raw_config["r"],
        "rank_pattern": {},
        "alpha_pattern": {},
        "target_modules": plan.target_modules,
        "task_type": "CAUSAL_LM",
    }


@dataclass(frozen=True)
class ExportResult:
    path: Path
    source: str  # tinker_path
    family: str
    base_model: str
    tensors: int
    bytes_written: int


def export_peft(
    checkpoint: RawCheckpoint,
    facts: families.BaseModelFacts,
    out: Path,
    *,
    dtype: str | None = None,
    force: bool = False,
) -> ExportResult:
    families.check_convertible(facts)
    target_dtype = FLOAT_DTYPES[dtype] if dtype else None
    if out.exists() or out.is_symlink():
        if not force:
            raise ConflictError(f"{out} exists", option="force")
        if not out.is_dir() or out.is_symlink():
            raise UsageError(f"{out} exists and is not a directory; not replacing it")
    source_file = checkpoint.path / ADAPTER_MODEL
    listed = checkpoint.manifest.files.get(ADAPTER_MODEL)
    if listed is not None and listed.size != source_file.stat().st_size:
        # The digest recorded in OUT's manifest is the download's: it must still be this file.
        raise IntegrityError(
            f"{source_file} is not the file its download verified (size differs)",
            hint="run `logits ckpt verify` on it, or download it again",
        )
    raw, _ = read_header(source_file)
    plan = plan_conversion(raw, facts, target_dtype)
    config = peft_config(checkpoint.adapter_config, facts.name, plan)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 is for the staging only; OUT is a plain directory
        size = write_safetensors(
            source_file, staging / ADAPTER_MODEL, plan.tensors, {"format": "pt"}
        )
        (staging / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        (staging / EXPORT_MANIFEST).write_text(
            json.dumps(export_manifest(checkpoint, facts, target_dtype), indent=2) + "\n"
        )
        fsync_directory(staging)
        install(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(
        out, checkpoint.manifest.tinker_path, facts.family, facts.name, len(plan.tensors), size
    )


def export_manifest(
    checkpoint: RawCheckpoint, facts: families.BaseModelFacts, dtype: str | None
) -> dict[str, Any]:
    source = checkpoint.manifest
    digest = source.files.get(ADAPTER_MODEL)
    return {
        "format": 1,
        "source": {
            "tinker_path": source.tinker_path,
            "checkpoint_id": source.checkpoint_id,
            "adapter_sha256": digest.sha256 if digest else None,
            "archive_sha256": source.archive_sha256,
        },
        "conversion": {
            "format": "peft",
            "family": facts.family,
            "base_model": facts.name,
            "base_model_facts": facts.source,
            "dtype": dtype or "source",
            # No time of day: the same checkpoint exported again is the same bytes, so
            # push-hf of unchanged content makes no new commit.
            "tool": f"logits {__version__}",
        },
    }


def install(staging: Path, out: Path) -> None:
    """``staging`` becomes ``out``; an existing ``out`` (``--force``) is moved aside first and
    removed only once the new one is in place."""
    aside: Path | None = None
    if out.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        aside.rmdir()
        out.rename(aside)
    try:
        staging.rename(out)
    except BaseException:
        if aside is not None:
            with contextlib.suppress(OSError):
                aside.rename(out)
        raise
    fsync_directory(out.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
