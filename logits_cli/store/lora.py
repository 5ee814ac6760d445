"""The live LoRA state of a training run (docs/protocol.md §7.2, §7.3).

A run's state directory holds exactly the files an archive carries: ``adapter_config.json``,
``adapter_model.safetensors`` and ``optimizer_state.safetensors``. The reference server does
not train, so the state only changes by ``init_state`` (create) and ``restore_state`` (load);
``archive.build_archive`` snapshots it (save). Every file is replaced atomically (temp file in
the same directory, fsync, rename), so a reader never sees a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save

from logits_cli import models
from logits_cli.diskio import fsync_directory, fsync_file, write_all
from logits_cli.errors import IntegrityError, UsageError
from logits_cli.store.catalog import ModelShape, default_catalog
from logits_cli.store.layout import lora_tensor_shapes, target_modules

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_MODEL = "adapter_model.safetensors"
OPTIMIZER_STATE = "optimizer_state.safetensors"
CHECKPOINT_COMPLETE = "checkpoint_complete"

MEMBERS_BY_KIND: dict[str, tuple[str, ...]] = {
    "weights": (ADAPTER_CONFIG, ADAPTER_MODEL, OPTIMIZER_STATE),
    "sampler_weights": (ADAPTER_CONFIG, ADAPTER_MODEL),
}

LORA_ALPHA = 32  # docs/protocol.md §7.2: what the reference server writes
ADAPTER_METADATA = {"format": "pt"}
OPTIMIZER_METADATA = {"format": "pt", "optimizer": "adam"}

COPY_CHUNK = 8 << 20
_MAX_CONFIG_BYTES = 1 << 20  # adapter_config.json and checkpoint_complete are a few hundred bytes


def shape_for(base_model: str) -> ModelShape | None:
    """The shape of a model of the shipped catalog (a store may carry a larger one)."""
    return default_catalog().get(base_model)


def __getattr__(name: str) -> Any:
    # MODEL_SHAPES is built on first use: the catalog is data read from base_models.json.
    if name == "MODEL_SHAPES":
        return {shape.name: shape for shape in default_catalog()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def adapter_config(
    base_model: str, lora: models.LoraConfig, shape: ModelShape | None = None
) -> dict[str, Any]:
    shape = shape or default_catalog().require(base_model)
    return {
        "base_model_name_or_path": base_model,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "lora_alpha": LORA_ALPHA,
        "lora_dropout": 0.0,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": lora.rank,
        "target_modules": target_modules(shape, lora),
        "task_type": "CAUSAL_LM",
    }


def adapter_config_bytes(config: dict[str, Any]) -> bytes:
    """UTF-8 JSON, keys sorted, 2-space indent, newline-terminated (docs/protocol.md §7.2)."""
    return (json.dumps(config, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


# -- atomic writes ------------------------------------------------------------------------


TEMP_SUFFIX = ".tmp"
RESTORE_PREFIX = ".restore-"  # scratch directory of a load, inside the run's state directory


@contextmanager
def temp_path_beside(directory: Path, name: str, owner: str | None = None) -> Iterator[Path]:
    """A fresh temp file path beside ``name``; removed unless the caller renamed it away.

    ``owner`` (a store instance id) goes into the name, ``.NAME.OWNER.XXXX.tmp``, so a
    start-up sweep can remove the files of a process that crashed and only those.
    """
    prefix = f".{name}.{owner}." if owner else f".{name}."
    fd, temp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=TEMP_SUFFIX)
    os.close(fd)
    path = Path(temp)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    with temp_path_beside(path.parent, path.name) as temp:
        write(temp)
        fsync_file(temp)
        os.replace(temp, path)


# -- remembered digests -------------------------------------------------------------------
# A save must put every member's sha256 in checkpoint_complete *and* hash the whole archive;
# hashing each byte twice would make it CPU-bound. The digest of a state file is known when
# the file is written, so it is kept in an extended attribute of the file's inode: a file
# replaced by rename has a fresh inode without it, and an in-place change alters the size or
# mtime recorded beside the digest. Filesystems without user xattrs simply hash at save time.

_DIGEST_XATTR = "user.logits.sha256"


def record_digest(path: Path, sha256: str) -> None:
    stat = os.stat(path)
    value = f"{sha256} {stat.st_size} {stat.st_mtime_ns}".encode()
    with suppress(OSError):
        os.setxattr(path, _DIGEST_XATTR, value)


def recorded_digest(fd: int) -> str | None:
    """The remembered sha256 of the open file ``fd``, if still valid for its contents."""
    try:
        sha256, size, mtime_ns = os.getxattr(fd, _DIGEST_XATTR).decode().split()
    except (OSError, ValueError):
        return None
    stat = os.fstat(fd)
    if (stat.st_size, stat.st_mtime_ns) != (int(size), int(mtime_ns)):
        return None
    return sha256


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _record_digests(paths: list[Path]) -> None:
    # hashlib releases the GIL, so two files hash at once on two cores.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="state-sha256") as hashers:
        for path, sha256 in zip(paths, hashers.map(file_sha256, paths), strict=True):
            record_digest(path, sha256)


def _write_bytes(data: bytes) -> Callable[[Path], object]:
    return lambda temp: temp.write_bytes(data)


def _write_tensors(
    tensors: dict[str, np.ndarray], metadata: dict[str, str]
) -> Callable[[Path], None]:
    ordered = dict(sorted(tensors.items()))

    def write(temp: Path) -> None:
        # Serialized in memory (as save_file does too), then written in diskio pieces:
        # save_file writes the whole file in one call, ten times the kernel's cost.
        data = save(ordered, metadata=metadata)
        with open(temp, "wb", buffering=0) as out:
            write_all(out.fileno(), data)

    return write


def _zero_moments(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    # np.zeros maps the zero page lazily: the moments take memory only once safetensors
    # serializes them.
    moments: dict[str, np.ndarray] = {"step": np.zeros(1, dtype=np.int64)}
    for name, tensor_shape in shapes.items():
        moments[f"{name}.exp_avg"] = np.zeros(tensor_shape, dtype=np.float32)
        moments[f"{name}.exp_avg_sq"] = np.zeros(tensor_shape, dtype=np.float32)
    return moments


# -- creating and restoring the live state ------------------------------------------------


def init_state(
    state_dir: Path, base_model: str, lora: models.LoraConfig, shape: ModelShape | None = None
) -> None:
    """Write a fresh adapter: A random (PEFT's Kaiming-uniform bound), B zero, Adam at step 0.

    ``shape`` is the base model's entry in the caller's catalog (default: the shipped one).
    With ``lora.seed`` the tensors are reproducible; without it they come from OS entropy.
    """
    shape = shape or shape_for(base_model)
    if shape is None:
        raise UsageError(f"unknown base model {base_model!r}")
    if lora.rank <= 0:
        raise UsageError(f"LoRA rank must be positive, got {lora.rank}")
    shapes = lora_tensor_shapes(shape, lora)
    if not shapes:
        raise UsageError("a LoRA config must train at least one of attn, mlp or unembed")
    state_dir.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(lora.seed)
    tensors: dict[str, np.ndarray] = {}
    # Linear modules first, in module order, then the experts: the draws of a seed stay
    # those of earlier releases for models without experts.
    for name in sorted(shapes, key=lambda n: ".mlp.experts." in n):
        if ".lora_B." in name:
            tensors[name] = np.zeros(shapes[name], dtype=np.float32)
            continue
        bound = np.float32(1.0 / np.sqrt(shapes[name][-1]))  # fan-in: the last dimension
        lora_a = rng.random(shapes[name], dtype=np.float32)
        lora_a *= 2 * bound
        lora_a -= bound
        tensors[name] = lora_a

    _write_atomically(
        state_dir / ADAPTER_CONFIG,
        _write_bytes(adapter_config_bytes(adapter_config(base_model, lora, shape))),
    )
    _write_atomically(state_dir / ADAPTER_MODEL, _write_tensors(tensors, ADAPTER_METADATA))
    del tensors
    _write_atomically(
        state_dir / OPTIMIZER_STATE, _write_tensors(_zero_moments(shapes), OPTIMIZER_METADATA)
    )
    fsync_directory(state_dir)
    _record_digests([state_dir / name for name in MEMBERS_BY_KIND["weights"]])


def tensor_shapes(safetensors_file: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes from a safetensors header, without reading tensor data."""
    with safe_open(safetensors_file, framework="numpy") as handle:
        return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118


def _check_member_name(member: tarfile.TarInfo, seen: set[str]) -> None:
    name = member.name
    if not name or name.startswith("/") or any(bad in name for bad in ("/", "\\", "..", "\0")):
        raise IntegrityError(f"archive member has an unsafe name: {name!r}")
    if name in seen:
        raise IntegrityError(f"archive member {name!r} appears twice")
    if not member.isreg():
        raise IntegrityError(f"archive member {name!r} is not a regular file")
    seen.add(name)


def _stream_member(source: Any, destination: Path) -> tuple[int, str]:
    """Copy a member to ``destination`` in chunks; returns its size and sha256."""
    digest = hashlib.sha256()
    size = 0
    with open(destination, "wb", buffering=0) as out:
        while chunk := source.read(COPY_CHUNK):
            digest.update(chunk)
            write_all(out.fileno(), chunk)
            size += len(chunk)
        os.fsync(out.fileno())
    return size, digest.hexdigest()


def restore_state(
    state_dir: Path, archive: Path, *, optimizer: bool, owner: str | None = None
) -> None:
    """Replace the live state with an archive's members (a ``load``).

    Members are streamed to temp files and checked against ``checkpoint_complete`` before any
    live file is replaced. With ``optimizer=False`` the archive's optimizer state (if any) is
    ignored and Adam restarts: zero moments shaped like the loaded adapter, step 0.
    """
    wanted = {ADAPTER_CONFIG, ADAPTER_MODEL} | ({OPTIMIZER_STATE} if optimizer else set())
    state_dir.mkdir(parents=True, exist_ok=True)
    scratch_prefix = f"{RESTORE_PREFIX}{owner}-" if owner else RESTORE_PREFIX
    with tempfile.TemporaryDirectory(dir=state_dir, prefix=scratch_prefix) as scratch:
        staged: dict[str, Path] = {}
        digests: dict[str, models.FileDigest] = {}
        manifest: models.CheckpointComplete | None = None
        seen: set[str] = set()
        try:
            with tarfile.open(archive, mode="r:*") as tar:
                for member in tar:
                    _check_member_name(member, seen)
                    source = tar.extractfile(member)
                    assert source is not None  # a regular file always has a stream
                    if member.name == CHECKPOINT_COMPLETE:
                        manifest = models.CheckpointComplete.model_validate_json(
                            source.read(_MAX_CONFIG_BYTES)
                        )
                    elif member.name in wanted:
                        staged[member.name] = Path(scratch) / member.name
                        size, sha256 = _stream_member(source, staged[member.name])
                        digests[member.name] = models.FileDigest(sha256=sha256, size=size)
        except (tarfile.TarError, ValueError) as exc:
            raise IntegrityError(f"checkpoint archive is corrupt: {exc}") from exc

        if manifest is None:
            raise IntegrityError("checkpoint archive has no checkpoint_complete manifest")
        if OPTIMIZER_STATE in wanted - staged.keys():
            raise UsageError(f"checkpoint archive has no {OPTIMIZER_STATE}")
        missing = sorted(wanted - staged.keys())
        if missing:
            raise IntegrityError(f"checkpoint archive has no {missing[0]}")
        for name, digest in digests.items():
            if manifest.files.get(name) != digest:
                raise IntegrityError(
                    f"checkpoint archive member {name} does not match its manifest"
                )

        for name, digest in digests.items():
            record_digest(staged[name], digest.sha256)
        if not optimizer:
            staged[OPTIMIZER_STATE] = Path(scratch) / OPTIMIZER_STATE
            moments = _zero_moments(tensor_shapes(staged[ADAPTER_MODEL]))
            _write_tensors(moments, OPTIMIZER_METADATA)(staged[OPTIMIZER_STATE])
            fsync_file(staged[OPTIMIZER_STATE])
            _record_digests([staged[OPTIMIZER_STATE]])

        for name in (ADAPTER_CONFIG, ADAPTER_MODEL, OPTIMIZER_STATE):
            os.replace(staged[name], state_dir / name)
        fsync_directory(state_dir)


def read_adapter_config(path_or_state_dir: Path | str) -> dict[str, Any]:
    """The ``adapter_config.json`` of a state directory, a checkpoint archive, or the file."""
    path = Path(path_or_state_dir)
    if path.is_dir():
        path = path / ADAPTER_CONFIG
    try:
        if tarfile.is_tarfile(path):
            with tarfile.open(path, mode="r:*") as tar:
                for member in tar:
                    if member.name == ADAPTER_CONFIG and member.isreg():
                        source = tar.extractfile(member)
                        assert source is not None
                        return _parse_config(source.read(_MAX_CONFIG_BYTES))
            raise IntegrityError(f"checkpoint archive has no {ADAPTER_CONFIG}")
        with open(path, "rb") as handle:
            return _parse_config(handle.read(_MAX_CONFIG_BYTES))
    except tarfile.TarError as exc:
        raise IntegrityError(f"checkpoint archive is corrupt: {exc}") from exc


def _parse_config(data: bytes) -> dict[str, Any]:
    try:
        config = json.loads(data)
    except ValueError as exc:
        raise IntegrityError(f"{ADAPTER_CONFIG} is not valid JSON") from exc
    if not isinstance(config, dict):
        raise IntegrityError(f"{ADAPTER_CONFIG} is not a JSON object")
    return config
