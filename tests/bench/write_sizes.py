"""Write-size benchmark (tests/bench): why every layer writes through ``diskio.write_all``.

    .venv/bin/python tests/bench/write_sizes.py [--mib 272] [--repeat 3]

Writes the same bytes into a new file five ways, interleaved and repeated, each after the same
settling pause: ``dd`` with 2 MiB, 256 KiB and 16 KiB blocks (the yardstick: no code of ours),
one ``os.write`` per 8 MiB chunk (what ``file.write(chunk)`` does with large chunks), and
``diskio.write_all`` of the same 8 MiB chunks. Prints the medians of wall-clock and system
time and the ratio of the large writes to the pieces. On Linux 6.x the page cache gives each
call a folio as large as the call, and on this VM large folios cost several times more per
byte (see ``logits_cli/diskio.py``).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from download import settle

from logits_cli.diskio import WRITE_PIECE, write_all

CHUNK = 8 << 20


def children_sys() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime


def self_sys() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def with_dd(target: Path, block: int, mib: int) -> tuple[float, float]:
    before, started = children_sys(), time.perf_counter()
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={target}", f"bs={block}", f"count={(mib << 20) // block}"],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started, children_sys() - before


def with_python(target: Path, mib: int, pieces: bool) -> tuple[float, float]:
    chunk = memoryview(os.urandom(CHUNK))
    before, started = self_sys(), time.perf_counter()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range((mib << 20) // CHUNK):
            if pieces:
                write_all(fd, chunk)
            else:
                assert os.write(fd, chunk) == CHUNK
    finally:
        os.close(fd)
    return time.perf_counter() - started, self_sys() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=272)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="logits-bench-writes-", dir=args.workdir))
    contenders = {
        "dd bs=2M": lambda t: with_dd(t, 2 << 20, args.mib),
        "dd bs=256K": lambda t: with_dd(t, 256 << 10, args.mib),
        f"dd bs={WRITE_PIECE >> 10}K": lambda t: with_dd(t, WRITE_PIECE, args.mib),
        "os.write of 8 MiB chunks": lambda t: with_python(t, args.mib, pieces=False),
        f"diskio.write_all ({WRITE_PIECE >> 10} KiB calls)": lambda t: with_python(
            t, args.mib, pieces=True
        ),
    }
    names = list(contenders)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    try:
        for round_ in range(args.repeat):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                target = work / "file"
                settle()
                runs[name].append(contenders[name](target))
                target.unlink()
        print(f"{args.mib} MiB into a new file, medians of {args.repeat}:")
        medians = {}
        for name in names:
            wall = statistics.median(run[0] for run in runs[name])
            system = statistics.median(run[1] for run in runs[name])
            medians[name] = (wall, system)
            print(f"  {name:<36} {wall:6.3f} s, system {system:5.2f} s")
        large, pieces = medians[names[3]], medians[names[4]]
        dd_large, dd_pieces = medians[names[0]], medians[names[2]]
        print(
            f"large calls / pieces: ours {large[0] / pieces[0]:.1f}x the time, "
            f"dd {dd_large[0] / dd_pieces[0]:.1f}x"
        )
    finally:
        for leftover in work.iterdir():
            leftover.unlink()
        work.rmdir()


if __name__ == "__main__":
    main()
