"""Does the regression gate tell noise from a real slowdown, on this machine, with real measurements?

    python benchmarks/gate_noise.py runs/mnist5k --rounds 3 --trials 20

1. Re-measurement: copies the run directory, runs `edgekd bench` + `edgekd report` `rounds` times, and
   gates every later report against the first at max_latency_increase = 0.10. The files are identical,
   so every FAIL is a false alarm (inconclusive is allowed: it says the noise is too wide to decide).
2. A genuine slowdown: exports two MLPs whose single-sample latency differs by about 1.6x (hidden
   256-256 vs 256-256-256-192: more layers of the same kernel; widths jump between XNNPACK tile
   sizes), printing the measured ratio, then `trials` times measures both with the
   agent (bench.processes processes each, interleaved) and gates the slow one, named as the fast one,
   against the fast one. Each trial should FAIL.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from edgekd.bench.agent.jobs import Job, run_jobs, worker_command
from edgekd.bench.agent.worker import Timing
from edgekd.export.formats import ExportOptions
from edgekd.export.driver import export_model
from edgekd.models import ModelSpec, build_model
from edgekd.pipeline.config import BenchConfig
from edgekd.pipeline.reporting.budgets import Regression
from edgekd.pipeline.reporting.gate import check_regression


def remeasure(run_dir: Path, rounds: int, work: Path) -> Counter:
    copy = work / "run"
    shutil.copytree(run_dir, copy)
    reports = []
    for i in range(rounds):
        for cmd in ("bench", "report"):
            subprocess.run([sys.executable, "-m", "edgekd.pipeline.cli", "-q", cmd, str(copy)], check=True)
        reports.append(json.loads((copy / "report.json").read_text()))
        print(f"round {i + 1}: measured {len(reports[-1]['results'])} files", flush=True)
    statuses: Counter = Counter()
    for i, report in enumerate(reports[1:], 2):
        for v in check_regression(report, reports[0], Regression(max_latency_increase=0.10)):
            if v.rule == "max_latency_increase":
                statuses[v.status] += 1
                if v.status == "fail":
                    print(f"  FALSE ALARM round {i} vs 1: {v.artifact} {100 * v.measured:+.1f} % "
                          f"(interval {100 * v.ci[0]:+.1f}..{100 * v.ci[1]:+.1f} %)")
    return statuses


def slowdown(trials: int, work: Path) -> tuple[float, Counter]:
    x = np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)
    options = ExportOptions(x, np.zeros(64, dtype=np.int64))
    files = {}
    for name, hidden in (("fast", [256, 256]), ("slow", [256, 256, 256, 192])):
        torch.manual_seed(0)
        model = build_model(ModelSpec("mlp", (1, 28, 28), 10, {"hidden": hidden}))
        files[name] = export_model("tflite", model, torch.zeros(1, 1, 28, 28), work / f"{name}.tflite", options).path
    cfg = BenchConfig()
    timing = Timing(cfg.warmup, cfg.min_runs, cfg.min_seconds)
    statuses: Counter = Counter()
    ratios = []
    for trial in range(trials):
        jobs = [Job("m.tflite", worker_command(files[n], None, cfg.threads, timing)) for n in ("fast", "slow")]
        fast, slow = run_jobs(jobs, cfg.processes, "local")
        ratios.append(slow["latency_ms"]["p50"] / fast["latency_ms"]["p50"])
        for r in (fast, slow):
            r.update(accuracy=1.0, n_eval=1)
        (verdict,) = [v for v in check_regression({"results": [slow]}, {"results": [fast]},
                                                  Regression(max_latency_increase=0.10)) if v.rule == "max_latency_increase"]
        statuses[verdict.status] += 1
        print(f"trial {trial + 1}: slow/fast p50 {ratios[-1]:.2f}x -> {verdict.status}", flush=True)
    return float(np.median(ratios)), statuses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        same = remeasure(args.run_dir, args.rounds, Path(tmp))
        ratio, slow = slowdown(args.trials, Path(tmp))
    print(f"identical files, {args.rounds - 1} re-measurements gated against the first: "
          f"{same['fail']} FAIL, {same['inconclusive']} inconclusive, {same['pass']} pass")
    print(f"genuine slowdown (median {ratio:.2f}x), {args.trials} trials: {slow['fail']} FAIL, "
          f"{slow['inconclusive']} inconclusive, {slow['pass']} pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
