"""`edgekd sweep`: one teacher, one student per point of a grid and per seed.

    edgekd sweep CONFIG --set distill.temperature=1,2,4,8,20 --set distill.alpha=0.5,0.9 --seeds 3 --jobs 2

The run directory's teacher is trained once (or found fresh); each (point, seed) is a student variant
under students/<name>/ (e.g. T8-a0.5-s1), trained in its own process, `--jobs` at a time. A
re-run skips finished points. sweep.json holds every accuracy, mean and std per point; the report
shows its table and plot (accuracy vs the first key, one line per value of the second).
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import re
import statistics
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from edgekd.errors import UsageError
from edgekd.fileio import write_bytes, write_json
from edgekd.pipeline.layout import RunLayout
from edgekd.pipeline.reporting.plots import png_bytes

log = logging.getLogger(__name__)

SHORT = {"distill.temperature": "T", "distill.alpha": "a", "student.train.seed": "s"}
SHARED = ("run", "data", "teacher")  # sections every point must share with the teacher's run


def split_values(text: str) -> list[str]:
    """`a,b,[1,2],"x,y"` -> ["a", "b", "[1,2]", '"x,y"']: commas inside brackets, braces or quotes stay."""
    out, depth, quote, current = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(current.strip())
            current = ""
            continue
        current += ch
    return [v for v in [*out, current.strip()] if v]


def parse_grid(sets: list[str]) -> list[tuple[str, list[str]]]:
    grid = []
    for item in sets:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not split_values(values):
            raise UsageError(f"--set {item!r}: expected KEY=V1,V2,..., e.g. --set distill.temperature=1,2,4,8")
        grid.append((key.strip(), split_values(values)))
    return grid


def point_name(point: dict[str, str], seed: int) -> str:
    def short(key: str, value: str) -> str:
        label = SHORT.get(key, key.rsplit(".", 1)[-1])
        text = re.sub(r"[^A-Za-z0-9._+-]+", "_", value.strip("\"'")).strip("_")
        return label + text if re.match(r"[-+]?[\d.]", text) else f"{label}={text}"
    return "-".join([*(short(k, v) for k, v in point.items()), f"s{seed}"])


def train_variant(config: str, overrides: list[str], run_dir: str, variant: str, threads: int) -> dict:
    """One student variant, in a worker process (sweep points, search rungs): its accuracies."""
    import torch

    from edgekd.pipeline.config import load_config
    from edgekd.pipeline.run import run_pipeline

    torch.set_num_threads(threads)
    cfg = load_config(Path(config), overrides)
    summary = run_pipeline(cfg, Path(run_dir), variant=variant, only=("student",))
    m = summary.metrics["student"]
    return {"accuracy": m["accuracy"], "val_accuracy": m["val_accuracy"], "ran": summary.ran == ["student"]}


def run_sweep(config: Path, base: list[str], sets: list[str], seeds: int, jobs: int, run_dir: Path,
              progress=print) -> dict:
    from edgekd.pipeline.config import load_config
    from edgekd.pipeline.run import run_pipeline

    grid = parse_grid(sets)
    points = [dict(zip([k for k, _ in grid], values)) for values in itertools.product(*[v for _, v in grid])]
    root_cfg = load_config(config, base)
    for point in points:  # every point must share the teacher the sweep trains once
        cfg = load_config(config, [*base, *(f"{k}={v}" for k, v in point.items())])
        changed = [s for s in SHARED if cfg.section(s) != root_cfg.section(s)]
        if changed:
            raise UsageError(f"sweep point {point} changes [{', '.join(changed)}]; a sweep varies the student and the "
                             "distillation of one teacher (sweep those keys with separate runs)")
    progress(f"sweep: teacher in {run_dir}, {len(points)} points x {seeds} seeds")
    run_pipeline(root_cfg, run_dir, until="student")  # the teacher, and the default point as the reference
    tasks = [(point, seed, point_name(point, seed)) for point in points for seed in range(seeds)]
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=get_context("spawn")) as pool:
        futures = {name: pool.submit(train_variant, str(config), [*base, *(f"{k}={v}" for k, v in point.items()),
                                                                   f"student.train.seed={seed}"],
                                     str(run_dir), name, threads) for point, seed, name in tasks}
        results = {}
        for name, future in futures.items():
            results[name] = future.result()
            progress(f"{name}: test {results[name]['accuracy']:.2%}, val {results[name]['val_accuracy']:.2%}"
                     f"{'' if results[name]['ran'] else ' (up to date, skipped)'}")
    summary = {"schema": "edgekd.sweep/1", "grid": dict(grid), "seeds": list(range(seeds)), "points": []}
    for point in points:
        accs = [results[point_name(point, s)]["accuracy"] for s in range(seeds)]
        summary["points"].append({"values": point, "accuracy": accs,
                                  "val_accuracy": [results[point_name(point, s)]["val_accuracy"] for s in range(seeds)],
                                  "mean": statistics.fmean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0})
    layout = RunLayout(run_dir)
    write_json(layout.sweep, summary)
    write_bytes(layout.sweep_plot, sweep_plot(summary))
    return summary


def sweep_plot(summary: dict) -> bytes:
    """Accuracy vs the first key (log scale when it is the temperature), one line per value of the second."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(summary["grid"])
    lines: dict[str, list[tuple[float, float, float]]] = {}
    for p in summary["points"]:
        label = ", ".join(f"{k}={p['values'][k]}" for k in keys[1:]) or "all"
        try:
            x = float(p["values"][keys[0]])
        except ValueError:
            x = float(len(lines.get(label, [])))
        lines.setdefault(label, []).append((x, 100 * p["mean"], 100 * p["std"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pts in lines.items():
        pts.sort()
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3, label=label)
    if keys[0] == "distill.temperature":
        xs = sorted({p[0] for pts in lines.values() for p in pts})
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
    ax.set_xlabel(keys[0])
    ax.set_ylabel(f"student test accuracy, % (mean ± std over {len(summary['seeds'])} seeds)")
    ax.set_title("edgekd sweep")
    ax.legend(fontsize=8)
    return png_bytes(fig)


def table_lines(summary: dict) -> list[str]:
    keys = list(summary["grid"])
    lines = ["| " + " | ".join(keys) + " | accuracy (mean ± std) | per seed |", "|" + "---|" * (len(keys) + 2)]
    for p in summary["points"]:
        per_seed = ", ".join(f"{100 * a:.2f}" for a in p["accuracy"])
        lines.append("| " + " | ".join(p["values"][k] for k in keys) +
                     f" | {100 * p['mean']:.2f} ± {100 * p['std']:.2f}% | {per_seed} |")
    return lines


def load(run_dir: Path) -> dict | None:
    path = RunLayout(run_dir).sweep
    return json.loads(path.read_text()) if path.exists() else None
