"""Distillation benchmark: run a config end to end for several seeds and print the averages.

    python benchmarks/distill_seeds.py configs/mnist5k.toml --seeds 0 1 2 3 4

Prints per seed: teacher / baseline / student test accuracy, the student's gain over the baseline,
the share of the teacher-baseline gap it closes, the distill/baseline epoch-time ratio, the seconds
of the three training stages (all forced, nothing reused), and from the run's report the file to
ship on the first bench target with its speed-up and size ratio against the teacher's fastest file;
then the means and how many seeds ship a student file. `--until student` skips export and bench.
"""
from __future__ import annotations

import argparse
import json
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
    parser.add_argument("--until", default="report", choices=STAGE_NAMES)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            cfg = load_config(Path(args.config), [*args.set, f"run.seed={seed}"])
            start = time.perf_counter()
            run_dir = Path(tmp) / f"seed{seed}"
            summary = run_pipeline(cfg, run_dir, until=args.until, force=STAGE_NAMES)
            m = summary.metrics
            seconds = sum(m[k]["train_seconds"] for k in ("teacher", "baseline", "student"))
            t, b, s = (m[k]["accuracy"] for k in ("teacher", "baseline", "student"))
            rows.append({"seed": seed, "teacher": t, "baseline": b, "student": s, "gain": s - b,
                         "closed": (s - b) / (t - b) if t > b else float("nan"),
                         "epoch_ratio": m["student"]["epoch_seconds_median"] / m["baseline"]["epoch_seconds_median"],
                         "seconds": seconds, "job_seconds": time.perf_counter() - start,
                         "macs_ratio": m["teacher"]["macs"] / m["student"]["macs"], **_shipped(run_dir)})
            print(_fmt(rows[-1]), flush=True)
    mean = {k: statistics.fmean(r[k] for r in rows) for k in rows[0] if isinstance(rows[0][k], float | int) and k != "seed"}
    mean["closed"] = (mean["student"] - mean["baseline"]) / (mean["teacher"] - mean["baseline"])
    print(_fmt({"seed": "mean", "ship": "", **mean}))
    shipped = [r for r in rows if r["ship"]]
    students = sum(r["ship"].startswith("export/student") for r in shipped)
    print(f"student - teacher {100 * (mean['student'] - mean['teacher']):+.2f} pts (mean)" +
          (f"; a student file ships on {students} of {len(rows)} seeds" if args.until == "report" else ""))
    return 0


def _shipped(run_dir: Path) -> dict:
    """The report's file to ship on its first target, and its ratios against the teacher's fastest file."""
    report = run_dir / "report.json"
    recs = json.loads(report.read_text()).get("recommendations", {}) if report.exists() else {}
    rec = next(iter(recs.values()), {})
    other = rec.get("against_teacher_fastest") or {}
    return {"ship": rec.get("ship") or "", "ship_accuracy": rec.get("accuracy", float("nan")),
            "speedup": other.get("speedup", float("nan")), "size_ratio": other.get("size_ratio", float("nan"))}


def _fmt(r: dict) -> str:
    return (f"seed {r['seed']}: teacher {100 * r['teacher']:.2f}%  baseline {100 * r['baseline']:.2f}%  "
            f"student {100 * r['student']:.2f}%  gain {100 * r['gain']:+.2f} pts  gap closed {r['closed']:.0%}  "
            f"MACs teacher/student {r['macs_ratio']:.1f}x  distill/baseline epoch {r['epoch_ratio']:.2f}x  "
            f"training stages {r['seconds']:.0f} s  job {r['job_seconds']:.0f} s"
            + (f"\n    ships {r['ship']} ({100 * r['ship_accuracy']:.2f}%): {r['speedup']:.1f}x faster and "
               f"{r['size_ratio']:.1f}x smaller than the teacher's fastest file" if r["ship"] else ""))


if __name__ == "__main__":
    sys.exit(main())
