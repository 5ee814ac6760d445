"""Live LoRA state: shapes, files (docs/protocol.md §7.2, §7.3), init and restore."""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from logits_cli import models
from logits_cli.errors import IntegrityError, UsageError
from logits_cli.store import archive, layout, lora

TINY = "logits/tiny"
CREATED = datetime(2025, 6, 1, 12, 0, 5, tzinfo=UTC)

TINY_ADAPTER_CONFIG = """\
{
  "base_model_name_or_path": "logits/tiny",
  "bias": "none",
  "fan_in_fan_out": false,
  "inference_mode": true,
  "lora_alpha": 32,
  "lora_dropout": 0.0,
  "modules_to_save": null,
  "peft_type": "LORA",
  "r": 4,
  "target_modules": [
    "down_proj",
    "gate_proj",
    "k_proj",
    "o_proj",
    "q_proj",
    "unembed_tokens",
    "up_proj",
    "v_proj"
  ],
  "task_type": "CAUSAL_LM"
}
"""


def safetensors_header(path: Path) -> dict:
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(length))


def tensor_names(path: Path) -> list[str]:
    return [name for name in safetensors_header(path) if name != "__metadata__"]


def save(state: Path, blobs: Path, kind: str = "weights") -> Path:
    path, _, _ = archive.build_archive(
        state, blobs, kind=kind, tinker_path=f"logits://s:train:0/{kind}/x", created=CREATED
    )
    return path


def fake_training(state: Path) -> None:
    """Stand in for a training step: new adapter values and non-zero Adam moments."""
    adapter = load_file(state / lora.ADAPTER_MODEL)
    rng = np.random.default_rng(99)
    trained = {name: rng.standard_normal(t.shape).astype(np.float32) for name, t in adapter.items()}
    moments = {"step": np.array([5], dtype=np.int64)}
    for name, tensor in trained.items():
        moments[f"{name}.exp_avg"] = tensor * 0.1
        moments[f"{name}.exp_avg_sq"] = tensor * tensor
    (state / lora.ADAPTER_MODEL).unlink()
    (state / lora.OPTIMIZER_STATE).unlink()
    save_file(trained, state / lora.ADAPTER_MODEL, metadata={"format": "pt"})
    save_file(moments, state / lora.OPTIMIZER_STATE, metadata={"format": "pt", "optimizer": "adam"})


# -- shapes -------------------------------------------------------------------------------


def test_known_models_come_from_their_configs() -> None:
    qwen = lora.shape_for("Qwen/Qwen3-8B")
    assert qwen is not None
    assert (
        qwen.name,
        qwen.arch,
        qwen.hidden_size,
        qwen.intermediate_size,
        qwen.num_layers,
        qwen.num_attention_heads,
        qwen.num_key_value_heads,
        qwen.head_dim,
        qwen.vocab_size,
        qwen.max_context_length,
    ) == ("Qwen/Qwen3-8B", "qwen3", 4096, 12288, 36, 32, 8, 128, 151936, 40960)
    assert qwen.source == "huggingface.co/Qwen/Qwen3-8B/config.json"
    assert {
        "Qwen/Qwen3-0.6B",
        "Qwen/Qwen3-4B",
        "Qwen/Qwen3-8B",
        "Qwen/Qwen3-32B",
        "Qwen/Qwen3.5-4B",
        "meta-llama/Llama-3.1-8B",
        "meta-llama/Llama-3.2-1B",
        TINY,
    } <= set(lora.MODEL_SHAPES)
    assert lora.shape_for("nobody/unknown") is None


def test_adapter_modules_of_qwen3_8b() -> None:
    shape = lora.MODEL_SHAPES["Qwen/Qwen3-8B"]
    modules = layout.adapter_modules(shape, models.LoraConfig(rank=32))
    assert len(modules) == 36 * 7 + 1
    assert list(modules) == sorted(modules)
    assert modules["model.layers.0.self_attn.q_proj"] == (4096, 4096)
    assert modules["model.layers.0.self_attn.k_proj"] == (4096, 1024)
    assert modules["model.layers.35.self_attn.v_proj"] == (4096, 1024)
    assert modules["model.layers.7.self_attn.o_proj"] == (4096, 4096)
    assert modules["model.layers.7.mlp.gate_proj"] == (4096, 12288)
    assert modules["model.layers.7.mlp.up_proj"] == (4096, 12288)
    assert modules["model.layers.7.mlp.down_proj"] == (12288, 4096)
    assert modules["model.unembed_tokens"] == (4096, 151936)


def test_adapter_modules_follow_the_train_flags() -> None:
    shape = lora.MODEL_SHAPES["meta-llama/Llama-3.2-1B"]
    mlp_only = layout.adapter_modules(
        shape, models.LoraConfig(train_attn=False, train_unembed=False)
    )
    assert {path.rsplit(".", 1)[1] for path in mlp_only} == {"gate_proj", "up_proj", "down_proj"}
    assert len(mlp_only) == 16 * 3
    attn = layout.adapter_modules(shape, models.LoraConfig(train_mlp=False, train_unembed=False))
    # Llama-3.2-1B: 32 heads of 64 (2048 wide), 8 key/value heads (512 wide).
    assert attn["model.layers.15.self_attn.q_proj"] == (2048, 2048)
    assert attn["model.layers.15.self_attn.k_proj"] == (2048, 512)
    assert attn["model.layers.15.self_attn.o_proj"] == (2048, 2048)
    assert "model.unembed_tokens" not in attn
    unembed = layout.adapter_modules(shape, models.LoraConfig(train_attn=False, train_mlp=False))
    assert unembed == {"model.unembed_tokens": (2048, 128256)}


# -- init_state ---------------------------------------------------------------------------


def test_adapter_config_is_exact(tmp_path: Path) -> None:
    lora.init_state(tmp_path, TINY, models.LoraConfig(rank=4, seed=1))
    assert (tmp_path / lora.ADAPTER_CONFIG).read_text(encoding="utf-8") == TINY_ADAPTER_CONFIG
    assert lora.read_adapter_config(tmp_path) == json.loads(TINY_ADAPTER_CONFIG)


def test_adapter_config_lists_only_trained_modules(tmp_path: Path) -> None:
    config = models.LoraConfig(rank=8, train_mlp=False)
    lora.init_state(tmp_path, "Qwen/Qwen3-0.6B", config.model_copy(update={"train_attn": False}))
    written = lora.read_adapter_config(tmp_path / lora.ADAPTER_CONFIG)
    assert written["target_modules"] == ["unembed_tokens"]
    assert written["r"] == 8
    assert written["base_model_name_or_path"] == "Qwen/Qwen3-0.6B"


def test_adapter_tensors(tmp_path: Path) -> None:
    lora.init_state(tmp_path, TINY, models.LoraConfig(rank=4, seed=3))
    path = tmp_path / lora.ADAPTER_MODEL
    assert safetensors_header(path)["__metadata__"] == {"format": "pt"}
    names = tensor_names(path)
    assert names == sorted(names)
    assert len(names) == 2 * (2 * 7 + 1)
    tensors = load_file(path)
    prefix = "base_model.model.model.layers.1"
    expected_shapes = {
        f"{prefix}.self_attn.q_proj.lora_A.weight": (4, 64),
        f"{prefix}.self_attn.q_proj.lora_B.weight": (64, 4),
        f"{prefix}.self_attn.k_proj.lora_B.weight": (32, 4),
        f"{prefix}.self_attn.o_proj.lora_A.weight": (4, 64),
        f"{prefix}.mlp.up_proj.lora_B.weight": (128, 4),
        f"{prefix}.mlp.down_proj.lora_A.weight": (4, 128),
        f"{prefix}.mlp.down_proj.lora_B.weight": (64, 4),
        "base_model.model.model.unembed_tokens.lora_A.weight": (4, 64),
        "base_model.model.model.unembed_tokens.lora_B.weight": (256, 4),
    }
    for name, tensor_shape in expected_shapes.items():
        assert tensors[name].shape == tensor_shape, name
    for name, tensor in tensors.items():
        assert tensor.dtype == np.float32
        if ".lora_B." in name:
            assert not tensor.any(), name
        else:
            bound = 1 / np.sqrt(tensor.shape[1])
            assert tensor.any() and np.abs(tensor).max() <= bound, name


def test_optimizer_state_is_zero_adam(tmp_path: Path) -> None:
    lora.init_state(tmp_path, TINY, models.LoraConfig(rank=2, seed=3, train_mlp=False))
    adapter = load_file(tmp_path / lora.ADAPTER_MODEL)
    path = tmp_path / lora.OPTIMIZER_STATE
    assert safetensors_header(path)["__metadata__"] == {"format": "pt", "optimizer": "adam"}
    state = load_file(path)
    expected = {"step"} | {f"{n}.{m}" for n in adapter for m in ("exp_avg", "exp_avg_sq")}
    assert set(state) == expected
    assert state["step"].dtype == np.int64 and state["step"].tolist() == [0]
    for name, tensor in adapter.items():
        for moment in ("exp_avg", "exp_avg_sq"):
            value = state[f"{name}.{moment}"]
            assert value.dtype == np.float32 and value.shape == tensor.shape
            assert not value.any()


def test_seed_makes_the_adapter_reproducible(tmp_path: Path) -> None:
    def adapter_bytes(seed: int | None, directory: str) -> bytes:
        lora.init_state(tmp_path / directory, TINY, models.LoraConfig(rank=4, seed=seed))
        return (tmp_path / directory / lora.ADAPTER_MODEL).read_bytes()

    assert adapter_bytes(7, "a") == adapter_bytes(7, "b")
    assert adapter_bytes(8, "c") != adapter_bytes(7, "a")
    assert adapter_bytes(None, "d") != adapter_bytes(None, "e")


def test_init_refuses_what_it_cannot_shape(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown base model"):
        lora.init_state(tmp_path, "nobody/unknown", models.LoraConfig())
    nothing = models.LoraConfig(train_attn=False, train_mlp=False, train_unembed=False)
    with pytest.raises(UsageError):
        lora.init_state(tmp_path, TINY, nothing)
    with pytest.raises(UsageError):
        lora.init_state(tmp_path, TINY, models.LoraConfig(rank=0))
    assert list(tmp_path.iterdir()) == []


def test_init_leaves_no_temp_files(tmp_path: Path) -> None:
    lora.init_state(tmp_path, TINY, models.LoraConfig(rank=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(lora.MEMBERS_BY_KIND["weights"])


# -- restore_state --------------------------------------------------------------------------


def test_restore_with_optimizer_round_trips(tmp_path: Path) -> None:
    state = tmp_path / "state"
    lora.init_state(state, TINY, models.LoraConfig(rank=4, seed=1))
    fake_training(state)
    saved = {name: (state / name).read_bytes() for name in lora.MEMBERS_BY_KIND["weights"]}
    blob = save(state, tmp_path / "blobs")

    lora.init_state(state, TINY, models.LoraConfig(rank=4, seed=2))
    assert (state / lora.ADAPTER_MODEL).read_bytes() != saved[lora.ADAPTER_MODEL]
    lora.restore_state(state, blob, optimizer=True)

    assert {name: (state / name).read_bytes() for name in saved} == saved
    assert sorted(p.name for p in state.iterdir()) == sorted(saved)


def test_restore_without_optimizer_resets_adam(tmp_path: Path) -> None:
    state = tmp_path / "state"
    lora.init_state(state, TINY, models.LoraConfig(rank=4, seed=1))
    fake_training(state)
    trained = load_file(state / lora.ADAPTER_MODEL)
    blob = save(state, tmp_path / "blobs")
    lora.init_state(state, TINY, models.LoraConfig(rank=4, seed=2))
    fake_training(state)  # the run's own optimizer must not survive the load either

    lora.restore_state(state, blob, optimizer=False)

    restored = load_file(state / lora.ADAPTER_MODEL)
    assert restored.keys() == trained.keys()
    for name in trained:
        np.testing.assert_array_equal(restored[name], trained[name])
    moments = load_file(state / lora.OPTIMIZER_STATE)
    assert moments["step"].tolist() == [0]
    for name, tensor in trained.items():
        assert moments[f"{name}.exp_avg"].shape == tensor.shape
        assert not moments[f"{name}.exp_avg"].any()
        assert not moments[f"{name}.exp_avg_sq"].any()


def test_restore_a_sampler_archive(tmp_path: Path) -> None:
    state = tmp_path / "state"
    lora.init_state(state, TINY, models.LoraConfig(rank=2, seed=1))
    adapter = (state / lora.ADAPTER_MODEL).read_bytes()
    blob = save(state, tmp_path / "blobs", kind="sampler_weights")
    lora.init_state(state, TINY, models.LoraConfig(rank=2, seed=2))

    with pytest.raises(
        UsageError, match=re.escape("checkpoint archive has no optimizer_state.safetensors")
    ):
        lora.restore_state(state, blob, optimizer=True)
    lora.restore_state(state, blob, optimizer=False)

    assert (state / lora.ADAPTER_MODEL).read_bytes() == adapter
    assert load_file(state / lora.OPTIMIZER_STATE)["step"].tolist() == [0]


def test_restore_rejects_a_member_that_does_not_match_the_manifest(tmp_path: Path) -> None:
    state = tmp_path / "state"
    lora.init_state(state, TINY, models.LoraConfig(rank=2, seed=1))
    blob = save(state, tmp_path / "blobs")
    with tarfile.open(blob) as tar:
        data_offset = tar.getmember(lora.ADAPTER_MODEL).offset_data
    with open(blob, "r+b") as handle:
        handle.seek(data_offset + 200)
        byte = handle.read(1)
        handle.seek(data_offset + 200)
        handle.write(bytes([byte[0] ^ 0xFF]))
    lora.init_state(state, TINY, models.LoraConfig(rank=2, seed=2))
    before = {p.name: p.read_bytes() for p in state.iterdir()}

    with pytest.raises(
        IntegrityError,
        match=re.escape(
            "checkpoint archive member adapter_model.safetensors does not match its manifest"
        ),
    ):
        lora.restore_state(state, blob, optimizer=True)

    assert {p.name: p.read_bytes() for p in state.iterdir()} == before


def test_restore_rejects_unsafe_members(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar"
    payload = tmp_path / "payload"
    payload.write_bytes(b"x")
    with tarfile.open(evil, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(payload, arcname="../adapter_config.json")
    with pytest.raises(IntegrityError, match="unsafe name"):
        lora.restore_state(tmp_path / "state", evil, optimizer=False)


def test_restored_files_keep_their_digests_for_the_next_save(tmp_path: Path) -> None:
    state = tmp_path / "state"
    lora.init_state(state, TINY, models.LoraConfig(rank=2, seed=1))
    fake_training(state)  # files written outside lora.py carry no remembered digest
    blob = save(state, tmp_path / "blobs")
    lora.restore_state(state, blob, optimizer=False)

    manifest = archive.read_manifest(save(state, tmp_path / "blobs2"))

    for name, digest in manifest.files.items():
        data = (state / name).read_bytes()
        assert digest == models.FileDigest(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        with open(state / name, "rb") as handle:
            assert lora.recorded_digest(handle.fileno()) == digest.sha256


def test_stale_remembered_digest_is_ignored(tmp_path: Path) -> None:
    state = tmp_path / "state"
    lora.init_state(state, TINY, models.LoraConfig(rank=2, seed=1))
    config = state / lora.ADAPTER_CONFIG
    original = config.stat()
    with open(config, "r+b") as handle:  # an in-place edit keeps the inode and its xattr
        handle.write(b"[")
    os.utime(config, ns=(original.st_atime_ns, original.st_mtime_ns + 1_000_000_000))

    manifest = archive.read_manifest(save(state, tmp_path / "blobs"))

    assert (
        manifest.files[lora.ADAPTER_CONFIG].sha256
        == hashlib.sha256(config.read_bytes()).hexdigest()
    )


def test_read_adapter_config_from_an_archive(tmp_path: Path) -> None:
    lora.init_state(tmp_path / "state", TINY, models.LoraConfig(rank=4, seed=1))
    blob = save(tmp_path / "state", tmp_path / "blobs", kind="sampler_weights")
    assert lora.read_adapter_config(blob) == json.loads(TINY_ADAPTER_CONFIG)


def test_restore_rejects_an_archive_without_the_adapter(tmp_path: Path) -> None:
    state = tmp_path / "state"
    lora.init_state(state, TINY, models.LoraConfig(rank=2, seed=1))
    blob = save(state, tmp_path / "blobs", kind="sampler_weights")
    stripped = tmp_path / "stripped.tar"
    with (
        tarfile.open(blob) as source,
        tarfile.open(stripped, "w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for member in source:
            if member.name != lora.ADAPTER_MODEL:
                tar.addfile(member, source.extractfile(member))

    with pytest.raises(IntegrityError, match=re.escape("checkpoint archive has no adapter_model")):
        lora.restore_state(state, stripped, optimizer=False)
