"""Benchmark: archiving a run's live state (``save``) against ``cp`` of the same bytes.

tests/bench wants ``save`` of a 1 GiB state within 2x ``cp``. ``build_archive`` fsyncs its
blob (a save must survive a crash) while plain ``cp`` leaves the bytes in the page cache, so
the figure is also given against ``cp`` followed by ``sync`` of the copies. Each measurement
starts after a ``sync`` so earlier writeback does not land on it, and rounds alternate so
background load hits both sides alike; medians are reported.

    .venv/bin/python tests/bench/save.py [--model Qwen/Qwen3-8B] [--rank 32] [--rounds 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from logits_cli import models
from logits_cli.store import archive, lora


def timed(action: Callable[[], object]) -> float:
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="Qwen/Qwen3-8B")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory's parent")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=options.dir, prefix="logits-bench-save-") as scratch:
        root = Path(scratch)
        state = root / "state"
        started = time.perf_counter()
        lora.init_state(state, options.model, models.LoraConfig(rank=options.rank, seed=0))
        init_seconds = time.perf_counter() - started
        # The same bytes without remembered digests: a first save on a filesystem without
        # user xattrs, which must hash every byte twice.
        plain_state = root / "plain-state"
        shutil.copytree(state, plain_state, copy_function=shutil.copyfile)
        members = [str(state / name) for name in lora.MEMBERS_BY_KIND["weights"]]
        state_bytes = sum(Path(member).stat().st_size for member in members)
        copies = root / "copies"
        blobs = root / "blobs"

        def copy(durable: bool) -> None:
            copies.mkdir()
            subprocess.run(["cp", *members, str(copies)], check=True)
            if durable:
                subprocess.run(["sync", *map(str, copies.iterdir())], check=True)

        def save(source: Path) -> None:
            archive.build_archive(
                source,
                blobs,
                kind="weights",
                tinker_path="logits://bench:train:0/weights/bench",
                created=datetime.now(UTC),
            )

        figures: dict[str, list[float]] = {}
        measurements: dict[str, Callable[[], None]] = {
            "cp": lambda: copy(durable=False),
            "cp + sync": lambda: copy(durable=True),
            "save": lambda: save(state),
            "save, no remembered digests": lambda: save(plain_state),
        }
        for _ in range(options.rounds):
            for label, action in measurements.items():
                figures.setdefault(label, []).append(timed(action))
                shutil.rmtree(copies, ignore_errors=True)
                shutil.rmtree(blobs, ignore_errors=True)

    median = {label: statistics.median(times) for label, times in figures.items()}
    print(f"state: {options.model} rank {options.rank}, {state_bytes / 2**30:.3f} GiB")
    print(f"init_state: {init_seconds:.2f} s")
    for label, seconds in median.items():
        rate = state_bytes / seconds / 2**20
        print(f"{label:>28}: median {seconds:.3f} s ({rate:.0f} MiB/s) of {options.rounds}")
    for save_label in ("save", "save, no remembered digests"):
        print(
            f"ratio {save_label} / cp: {median[save_label] / median['cp']:.2f}; "
            f"/ (cp + sync): {median[save_label] / median['cp + sync']:.2f}"
        )


if __name__ == "__main__":
    main()
