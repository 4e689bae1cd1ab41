"""Distillation benchmark: run a config end to end for several seeds and print the averages.

    python benchmarks/distill_seeds.py configs/mnist5k.toml --seeds 0 1 2

Prints per seed: teacher / baseline / student test accuracy, the student's gain over the baseline,
the share of the teacher-baseline gap it closes, the distill/baseline epoch-time ratio and the
seconds of the three training stages (all forced, nothing reused); then the means.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edgekd.pipeline.config import load_config
from edgekd.pipeline.run import run_pipeline
from edgekd.pipeline.stages import STAGE_NAMES


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            cfg = load_config(Path(args.config), [*args.set, f"run.seed={seed}"])
            start = time.perf_counter()
            summary = run_pipeline(cfg, Path(tmp) / f"seed{seed}", until="student", force=STAGE_NAMES)
            seconds = time.perf_counter() - start
            m = summary.metrics
            t, b, s = (m[k]["accuracy"] for k in ("teacher", "baseline", "student"))
            rows.append({"seed": seed, "teacher": t, "baseline": b, "student": s, "gain": s - b,
                         "closed": (s - b) / (t - b) if t > b else float("nan"),
                         "epoch_ratio": m["student"]["epoch_seconds_median"] / m["baseline"]["epoch_seconds_median"],
                         "seconds": seconds, "macs_ratio": m["teacher"]["macs"] / m["student"]["macs"]})
            print(_fmt(rows[-1]), flush=True)
    mean = {k: statistics.fmean(r[k] for r in rows) for k in rows[0] if k != "seed"}
    mean["closed"] = (mean["student"] - mean["baseline"]) / (mean["teacher"] - mean["baseline"])
    print(_fmt({"seed": "mean", **mean}))
    return 0


def _fmt(r: dict) -> str:
    return (f"seed {r['seed']}: teacher {100 * r['teacher']:.2f}%  baseline {100 * r['baseline']:.2f}%  "
            f"student {100 * r['student']:.2f}%  gain {100 * r['gain']:+.2f} pts  gap closed {r['closed']:.0%}  "
            f"MACs teacher/student {r['macs_ratio']:.1f}x  distill/baseline epoch {r['epoch_ratio']:.2f}x  "
            f"training stages {r['seconds']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
