"""Benchmark: ``ckpt export --format peft`` of a Qwen3-30B-A3B rank-32 adapter (48 layers x
128 experts, the catalog's shape, bf16) from a downloaded copy, against ``cp`` + ``sync``.

The export syncs its output (OUT must survive a crash before the rename), so ``cp`` is
followed by ``sync``. Two copies are timed: of the source's bytes (what the issue names) and
of as many bytes as the export writes (the expansion repeats each shared expert A or B once
per expert: the output is ~3.6x the input). Each measurement starts after a ``sync``; rounds
alternate; medians. Peak RSS of the export process is read from the kernel (ru_maxrss).

    .venv/bin/python tests/bench/export_peft.py [--rounds 3] [--dir PARENT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.peft.helpers import mark_downloaded

HIDDEN, WIDTH, EXPERTS, LAYERS, RANK = 2048, 768, 128, 48, 32
HEADS, KV_HEADS, HEAD_DIM, VOCAB = 32, 4, 128, 151936


def raw_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def pair(name: str, a: tuple[int, ...], b: tuple[int, ...]) -> None:
        shapes[f"base_model.model.{name}.lora_A.weight"] = a
        shapes[f"base_model.model.{name}.lora_B.weight"] = b

    for layer in range(LAYERS):
        pre = f"model.layers.{layer}"
        for proj, i, o in (
            ("q_proj", HIDDEN, HEADS * HEAD_DIM),
            ("k_proj", HIDDEN, KV_HEADS * HEAD_DIM),
            ("v_proj", HIDDEN, KV_HEADS * HEAD_DIM),
            ("o_proj", HEADS * HEAD_DIM, HIDDEN),
        ):
            pair(f"{pre}.self_attn.{proj}", (RANK, i), (o, RANK))
        pair(f"{pre}.mlp.experts.w1", (1, RANK, HIDDEN), (EXPERTS, WIDTH, RANK))
        pair(f"{pre}.mlp.experts.w3", (1, RANK, HIDDEN), (EXPERTS, WIDTH, RANK))
        pair(f"{pre}.mlp.experts.w2", (EXPERTS, RANK, WIDTH), (1, HIDDEN, RANK))
    pair("model.unembed_tokens", (RANK, HIDDEN), (VOCAB, RANK))
    return shapes


def write_raw(directory: Path) -> int:
    """The raw adapter (random bf16 bytes) and its config and download manifest."""
    directory.mkdir(parents=True)
    shapes, header, offset = raw_shapes(), {}, 0
    for name, shape in shapes.items():
        size = 2
        for n in shape:
            size *= n
        header[name] = {
            "dtype": "BF16",
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with (directory / "adapter_model.safetensors").open("wb") as file:
        file.write(struct.pack("<Q", len(raw)) + raw)
        left = offset
        while left:
            chunk = min(left, 64 << 20)
            file.write(os.urandom(chunk))
            left -= chunk
    config = {"r": RANK, "lora_alpha": 32, "base_model_name_or_path": "Qwen/Qwen3-30B-A3B"}
    (directory / "adapter_config.json").write_text(json.dumps(config))
    mark_downloaded(directory)
    return offset


def timed(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and the process's own peak RSS in KiB (wait4: this child alone)."""
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 0, argv
    return time.perf_counter() - start, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory's parent")
    parser.add_argument("--make-source", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_source is not None:
        print(write_raw(args.make_source))
        return
    with tempfile.TemporaryDirectory(prefix="bench-export-", dir=args.dir) as scratch_dir:
        scratch = Path(scratch_dir)
        source = scratch / "src"
        # Made by another process: a child inherits its parent's peak RSS (Linux keeps the
        # pre-exec high-water mark), so this process stays small for the measure to be the
        # export's own.
        made = subprocess.run(
            [sys.executable, __file__, "--make-source", str(source)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        source_bytes = int(made.stdout)
        out = scratch / "out"
        export = [sys.executable, "-m", "logits_cli", "ckpt", "export", str(source)]
        export += ["-o", str(out), "--force"]
        exports, copies, big_copies = [], [], []
        out_file = out / "adapter_model.safetensors"
        peak_kib = 0
        for _ in range(args.rounds):
            seconds, rss = timed(export)
            exports.append(seconds)
            peak_kib = max(peak_kib, rss)
            copy = scratch / "copy"
            copy_source = f"cp {source / 'adapter_model.safetensors'} {copy} && sync"
            copies.append(timed(["sh", "-c", copy_source])[0])
            copy.unlink()
            big_copies.append(timed(["sh", "-c", f"cp {out_file} {copy} && sync"])[0])
            copy.unlink()
        out_bytes = out_file.stat().st_size
        export_s, copy_s, big_s = (statistics.median(x) for x in (exports, copies, big_copies))
        largest = VOCAB * RANK * 2
        print(f"source {source_bytes / 2**30:.2f} GiB, export {out_bytes / 2**30:.2f} GiB")
        print(f"export median {export_s:.2f} s  (rounds {[round(x, 2) for x in exports]})")
        print(f"cp+sync of the source bytes {copy_s:.2f} s -> ratio {export_s / copy_s:.2f}")
        print(f"cp+sync of the output bytes {big_s:.2f} s -> ratio {export_s / big_s:.2f}")
        print(
            f"peak RSS of the export {peak_kib / 1024:.0f} MiB (budget: largest tensor x2 + 150 MB"
            f" = {(2 * largest) / 2**20 + 150:.0f} MiB)"
        )
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
