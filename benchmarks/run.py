"""Run every benchmark, print a table and write it to bench-results/ (``make bench``).

``P3DLAB_FAST=1`` (or ``--fast``) runs the small-size variants where a benchmark has them. Every
kernel is compiled (or loaded from Numba's cache) before the first benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from benchmarks import (
    bench_body,
    bench_diffrender,
    bench_giraffe,
    bench_io,
    bench_lessons,
    bench_load,
    bench_meshrcnn,
    bench_nerf,
    bench_raster,
    bench_splatting,
    bench_structures,
    bench_synsin,
    bench_volumes,
)
from benchmarks.harness import format_table, machine_speed

# the main rows under load after the rest (its busy processes end with it); the lessons last: minutes
# each, and they say whether the course fits its budget
MODULES = [
    bench_structures,
    bench_raster,
    bench_io,
    bench_diffrender,
    bench_volumes,
    bench_nerf,
    bench_splatting,
    bench_body,
    bench_meshrcnn,
    bench_giraffe,
    bench_synsin,
    bench_load,
    bench_lessons,
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fast", action="store_true", help="small sizes (same as P3DLAB_FAST=1)")
    parser.add_argument(
        "-k", default="", help="only benchmarks whose function name contains one of these comma-separated strings"
    )
    parser.add_argument("--out", default="bench-results", help="output folder")
    args = parser.parse_args(argv)
    if args.fast:
        os.environ["P3DLAB_FAST"] = "1"
    torch.set_num_threads(os.cpu_count() or 1)
    from p3dlab.classroom.warmup import warmup

    compile_s = warmup()  # compile (or load) every kernel first: no benchmark times the JIT
    speed_before = machine_speed()
    results = []
    for mod in MODULES:
        for fn in mod.ALL:
            if any(k in fn.__name__ for k in args.k.split(",")):
                got = fn()
                results.extend(got if isinstance(got, list) else [got])
                print(f"  done: {fn.__name__}", flush=True)
    speed_after = machine_speed()
    table = format_table(results)
    header = f"p3dlab benchmarks, {time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
    header += f"{os.cpu_count()} cores, torch {torch.__version__}, medians (kernel warm-up {compile_s:.1f} s)"
    header += "\nmachine at start / end: memory {:.1f} / {:.1f} GB/s, float32 matmul {:.0f} / {:.0f} GFLOP/s".format(
        speed_before[0], speed_after[0], speed_before[1], speed_after[1]
    )
    print(header)
    print(table)
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    (out / "latest.txt").write_text(header + "\n" + table + "\n")
    (out / "latest.json").write_text(json.dumps([r.__dict__ for r in results], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
