"""`edgekd cv`: k-fold comparison of the teacher, the distilled student and the "simple" student
trained on labels alone (the baseline), with a paired verdict on whether distillation helped.

    edgekd cv CONFIG --folds 5

Folds are stratified and seeded (`run.seed`); fold k is the test split of a whole run under
folds/<k>/, whose validation split (for early stopping) comes from the other folds only.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from edgekd.fileio import write_json, write_text
from edgekd.pipeline.layout import RunLayout

MODELS = ("teacher", "student", "baseline")


def paired_interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean and Student-t 95 % interval of per-fold differences."""
    from scipy import stats

    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, -math.inf, math.inf
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def verdict(lo: float, hi: float) -> str:
    if lo > 0:
        return "distillation helped beyond noise (the interval lies above zero)"
    if hi < 0:
        return "distillation hurt beyond noise (the interval lies below zero)"
    return "distillation did not help beyond noise (the interval includes zero)"


def run_cv(config: Path, overrides: list[str], folds: int, out: Path, progress=print) -> dict:
    from edgekd.pipeline.config import load_config
    from edgekd.pipeline.run import run_pipeline

    layout = RunLayout(out)
    per_fold = []
    for k in range(folds):
        cfg = load_config(config, [*overrides, f"data.folds={folds}", f"data.fold={k}"])
        summary = run_pipeline(cfg, layout.fold(k).root, until="student")
        row = {m: summary.metrics[m]["accuracy"] for m in MODELS}
        per_fold.append({"fold": k, **row, "n_test": summary.metrics["teacher"]["n_test"]})
        progress(f"fold {k + 1}/{folds}: teacher {row['teacher']:.2%}, distilled {row['student']:.2%}, "
                 f"simple {row['baseline']:.2%}")
    diffs = [f["student"] - f["baseline"] for f in per_fold]
    mean, lo, hi = paired_interval(diffs)
    result = {"schema": "edgekd.cv/1", "folds": folds, "per_fold": per_fold,
              "models": {m: {"mean": statistics.fmean(f[m] for f in per_fold),
                             "std": statistics.stdev(f[m] for f in per_fold) if folds > 1 else 0.0} for m in MODELS},
              "distilled_minus_simple": {"per_fold": diffs, "mean": mean, "ci95": [lo, hi], "verdict": verdict(lo, hi)}}
    write_json(layout.cv, result)
    write_text(layout.cv_table, "\n".join(markdown(result)) + "\n")
    return result


def markdown(result: dict) -> list[str]:
    names = {"teacher": "teacher", "student": "distilled student", "baseline": "simple student (labels only)"}
    d = result["distilled_minus_simple"]
    lines = [f"# edgekd cv: {result['folds']} folds", "", "| model | mean ± std accuracy | per fold |", "|---|---:|---|"]
    for m in MODELS:
        s = result["models"][m]
        lines.append(f"| {names[m]} | {100 * s['mean']:.2f} ± {100 * s['std']:.2f}% | "
                     + ", ".join(f"{100 * f[m]:.2f}" for f in result["per_fold"]) + " |")
    lo, hi = d["ci95"]
    lines += ["", f"Distilled − simple, paired by fold: {100 * d['mean']:+.2f} points (95 % interval "
                  f"{100 * lo:+.2f} to {100 * hi:+.2f}): **{d['verdict']}**."]
    return lines
