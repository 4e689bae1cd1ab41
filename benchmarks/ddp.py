"""Training on 1 and on 2 CPU processes (torchrun, gloo): accuracy over seeds and throughput.

    python benchmarks/ddp.py configs/digits.toml --seeds 0 1 2
    python benchmarks/ddp.py configs/mnist5k.toml --seeds 0 1 2

For each seed runs `edgekd run CONFIG --until student` once with one process and once with
`--nproc 2`, and prints teacher / baseline / student test accuracy, the seed-to-seed spread of each,
and training throughput (samples/s: training samples x epochs / training seconds, all ranks together).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MODELS = ("teacher", "baseline", "student")


def run(config: str, seed: int, nproc: int, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "edgekd.pipeline.cli", "-q", "run", config, "--out", str(out), "--until", "student",
           "--nproc", str(nproc), "--set", f"run.seed={seed}", "--set", "run.device=cpu",
           *[a for s in extra for a in ("--set", s)]]
    subprocess.run(cmd, check=True, capture_output=True)
    return json.loads((out / "metrics.json").read_text())["models"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    rows: dict[int, list[dict]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for nproc in (1, 2):
                m = run(args.config, seed, nproc, Path(tmp) / f"s{seed}-p{nproc}", args.set)
                rows[nproc].append(m)
                rate = {k: m[k]["train_samples"] * m[k]["epochs"] / m[k]["train_seconds"] for k in MODELS}
                print(f"seed {seed}, {nproc} process(es): " + ", ".join(
                    f"{k} {100 * m[k]['accuracy']:.2f}% ({rate[k]:,.0f} samples/s)" for k in MODELS), flush=True)
    for nproc, ms in rows.items():
        print(f"{nproc} process(es) over {len(ms)} seeds: " + ", ".join(
            f"{k} {100 * statistics.fmean(m[k]['accuracy'] for m in ms):.2f} ± "
            f"{100 * (statistics.stdev(m[k]['accuracy'] for m in ms) if len(ms) > 1 else 0):.2f}% "
            f"(range {100 * min(m[k]['accuracy'] for m in ms):.2f}-{100 * max(m[k]['accuracy'] for m in ms):.2f}), "
            f"{statistics.median(m[k]['train_samples'] * m[k]['epochs'] / m[k]['train_seconds'] for m in ms):,.0f} "
            "samples/s" for k in MODELS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
