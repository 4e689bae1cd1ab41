"""`edgekd search`: the distilled student that fits a device best, measured on that device.

    edgekd search CONFIG --target NAME (--max-p50-ms X | --budgets FILE) [--trials N] [--jobs N] [--out DIR]

One teacher (trained once, or brought), and a family of students: the config's student scaled in
width (its channel and unit counts times 0.25 .. 2) and depth (a stage fewer or more). Each
candidate is first exported and timed on the target as a copy trained for one epoch (latency does
not depend on the weights; the export and its int8 calibration need a checkpoint); candidates whose
fastest process is over the p50 limit are dropped before any real training. The rest are distilled
by successive halving: a short run each, ranked on the validation split, the best third promoted to
a longer run, and the best two of those trained in full, exported and timed on the target again.
The answer is the finalist with the best validation accuracy within the limit on that re-measurement;
the test split is read only for the finalists, and never chooses.

Every candidate is a student variant under students/<name>/ of the run directory (the chosen one
with its own report, gate-able like any run): a killed search resumes with the candidate it was in,
and a re-run with more trials reuses every run and timing already done. `--jobs` trains that many
students at once; timings never overlap on a CPU the target shares with this machine.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from edgekd.errors import UsageError
from edgekd.fileio import write_bytes, write_json
from edgekd.pipeline.config import SearchConfig
from edgekd.pipeline.layout import RunLayout
from edgekd.pipeline.reporting.plots import png_bytes
from edgekd.pipeline.sweep import train_variant

log = logging.getLogger(__name__)

# how each built-in architecture scales: its width keywords (ints or lists of ints) and the list whose
# length is its depth; a user architecture names its own in [search] (width_keys, depth_key)
SCALABLE: dict[str, dict] = {
    "cnn": {"width": ("channels", "hidden"), "depth": "channels"},
    "mlp": {"width": ("hidden",), "depth": "hidden"},
    "dsconv": {"width": ("stem", "channels"), "depth": "channels"},
}
ETA = 3  # successive halving keeps the best 1/ETA of each rung
FINALISTS = 2


@dataclass(frozen=True)
class Space:
    """What the search varies: the keywords a width multiplier scales, the list whose length is the depth
    ("" for none: depth stays), and the multipliers and depth changes to try."""

    width_keys: tuple[str, ...]
    depth_key: str
    widths: tuple[float, ...] = SearchConfig.widths
    depths: tuple[int, ...] = SearchConfig.depths
    input_pools: tuple[int, ...] = SearchConfig.input_pools


def space_for(arch: str, search: SearchConfig = SearchConfig()) -> Space:
    """[search]'s width_keys and depth_key where given, else the built-in architecture's own."""
    if search.width_keys:
        return Space(tuple(search.width_keys), search.depth_key, tuple(search.widths),
                     tuple(search.depths) if search.depth_key else (0,), tuple(search.input_pools))
    if arch not in SCALABLE:
        raise UsageError(f"student.arch = {arch!r}: search knows how to scale {', '.join(SCALABLE)}; for another "
                         "architecture name the keyword arguments that set its widths (ints or lists of ints) and, "
                         "optionally, the list whose length is its depth: [search] width_keys = [\"channels\"], "
                         "depth_key = \"channels\"")
    return Space(SCALABLE[arch]["width"], SCALABLE[arch]["depth"], tuple(search.widths), tuple(search.depths),
                 tuple(search.input_pools))


def _check_space(space: Space, arch: str, values: dict) -> None:
    """Every width key an int or a list of ints of the student, the depth key a list: else a UsageError."""
    bad = [k for k in space.width_keys if not (isinstance(values.get(k), int) or (
        isinstance(values.get(k), (list, tuple)) and values[k] and all(isinstance(v, int) for v in values[k])))]
    if space.depth_key and not isinstance(values.get(space.depth_key), (list, tuple)):
        bad.append(space.depth_key)
    if bad:
        shown = ", ".join(f"{k} = {values[k]!r}" if k in values else f"{k} (not a keyword of it)" for k in bad)
        raise UsageError(f"search: {arch!r} cannot be scaled by {shown}: width keys must be ints or lists of ints "
                         "and the depth key a list, in student.kwargs or as the architecture's defaults; fix "
                         "[search] width_keys / depth_key")


@dataclass(frozen=True)
class Candidate:
    name: str
    width: float
    depth: int
    kwargs: dict
    input_pool: int = 1

    def overrides(self, epochs: int) -> list[str]:
        table = "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in self.kwargs.items()) + "}"  # a TOML inline table
        return [f"student.kwargs={table}", f"student.train.epochs={epochs}"]


def scaled(space: Space, kwargs: dict, defaults: dict, width: float, depth: int) -> dict | None:
    """The student's kwargs with widths times `width` and `depth` stages added (repeating the last) or
    removed; None when no such model exists (no stage left)."""
    out = {**defaults, **kwargs}
    if space.depth_key:
        stages = list(out[space.depth_key])
        if len(stages) + depth < 1:
            return None
        out[space.depth_key] = stages[:len(stages) + depth] if depth < 0 else stages + [stages[-1]] * depth
    for key in space.width_keys:
        value = out[key]
        out[key] = ([max(1, round(v * width)) for v in value] if isinstance(value, (list, tuple))
                    else max(1, round(value * width)))
    return {k: v for k, v in out.items() if k in kwargs or k in space.width_keys or k == space.depth_key}


def candidates(space: Space, kwargs: dict, defaults: dict, trials: int, seed: int, arch: str = "") -> list[Candidate]:
    """`trials` candidates: the config's own student first, then the rest of the grid in a seeded order
    (the same seed gives the same list, and a larger `trials` extends it)."""
    from edgekd.models.registry import INPUT_POOL

    _check_space(space, arch, {**defaults, **kwargs})
    own = (1.0, 0, kwargs.get(INPUT_POOL, 1))  # the config's student
    pools = sorted(set(space.input_pools) | {own[2]})
    grid = [(w, d, p) for p in pools for d in space.depths for w in space.widths if (w, d, p) != own]
    random.Random(seed).shuffle(grid)
    found, seen = [], set()
    for w, d, p in [own, *grid]:
        k = scaled(space, kwargs, defaults, w, d)
        if k is not None:
            k = {**{key: v for key, v in k.items() if key != INPUT_POOL}, **({INPUT_POOL: p} if p > 1 else {})}
        key = json.dumps(k, sort_keys=True)
        if k is None or key in seen:
            continue
        seen.add(key)
        found.append(Candidate(f"w{w:g}-d{d:+d}" + (f"-r{p}" if p > 1 else ""), w, d, k, p))
    return found[:trials]


def _arch_defaults(arch: str) -> dict:
    from edgekd.models.registry import keyword_defaults

    return {k: list(v) if isinstance(v, tuple) else v for k, v in keyword_defaults(arch).items()}


def _student_p50(run_dir: Path, variant: str, target: str, artifact: str) -> dict:
    layout = RunLayout(run_dir, variant)
    rows = json.loads(layout.bench_file(target).read_text())["results"]
    row = next(r for r in rows if r["artifact"] == artifact)
    lat = row["latency_ms"]
    return {"p50_ms": lat["p50"], "range_ms": lat["p50_ci95"], "size_bytes": (layout.home / artifact).stat().st_size}


def _measured(config: Path, overrides: list[str], run_dir: Path, variant: str, target: str, fmt: str,
              report: bool = False) -> dict:
    """Train `variant` as `overrides` say, export it to `fmt` and time it on `target` (fresh stages are
    kept); with `report`, the variant's report too."""
    from edgekd.export.formats import FORMATS
    from edgekd.pipeline.config import load_config
    from edgekd.pipeline.run import run_pipeline

    cfg = load_config(config, [*overrides, "export.models=['student']",
                               f"export.formats=['{fmt}']", f"bench.targets=['{target}']", "bench.eager=[]"])
    stages = ("student", "export", "bench", *(["report"] if report else []))
    summary = run_pipeline(cfg, run_dir, variant=variant, only=stages)
    m = summary.metrics["student"]
    return {**_student_p50(run_dir, variant, target, f"export/student{FORMATS[fmt].suffix}"),
            "params": m.get("params"), "macs": m.get("macs"), "val_accuracy": m["val_accuracy"],
            "test_accuracy": m["accuracy"]}


def p50_limit(budgets: Path, target: str) -> float:
    """The tightest max_p50_ms of the budgets that apply to `target`'s student files."""
    from fnmatch import fnmatch

    from edgekd.pipeline.reporting.budgets import load_budgets

    limits = [b.max_p50_ms for b in load_budgets(budgets)[0] if b.max_p50_ms is not None and fnmatch(target, b.target)
              and fnmatch("export/student.int8.tflite", b.artifact if "/" in b.artifact else f"*{b.artifact}")]
    if not limits:
        raise UsageError(f"{budgets}: no budget with max_p50_ms for target {target!r} and the student's files; "
                         "add one, or give --max-p50-ms")
    return min(limits)


def rungs(full_epochs: int) -> list[int]:
    """Epochs of each fidelity: a ninth, a third, then the config's own."""
    return sorted({max(1, full_epochs // 9), max(1, full_epochs // 3), full_epochs})


def run_search(config: Path, base: list[str], target: str, max_p50_ms: float, trials: int, jobs: int, run_dir: Path,
               fmt: str = "tflite_int8", progress=print) -> dict:
    from edgekd.pipeline.config import load_config
    from edgekd.pipeline.run import run_pipeline

    cfg = load_config(config, [*base, f"bench.targets=['{target}']"])
    pool = candidates(space_for(cfg.student.arch, cfg.search), dict(cfg.student.kwargs),
                      _arch_defaults(cfg.student.arch), trials, cfg.run.seed, cfg.student.arch)
    progress(f"search: teacher and reference student in {run_dir}; {len(pool)} candidates, "
             + (f"p50 limit {max_p50_ms * 1e3:.1f} µs" if math.isfinite(max_p50_ms) else "no p50 limit") + f" on {target}")
    run_pipeline(cfg, run_dir, only=("teacher", "student", "quantize"))  # the default student is the reference
    base = [*base, f"bench.targets=['{target}']"]
    records = {c.name: {"name": c.name, "width": c.width, "depth": c.depth, "input_pool": c.input_pool, "kwargs": c.kwargs,
                        "fidelities": {}}
               for c in pool}
    # 1. latency first, on copies trained for one epoch: one at a time (timings never overlap)
    alive = []
    for c in pool:
        # PTQ: the probe's int8 file only needs the structure the shipped file will have, not QAT's accuracy
        probe = _measured(config, [*base, *c.overrides(1), "export.int8_method=ptq"], run_dir, f"{c.name}-probe",
                          target, fmt)
        rec = records[c.name]
        rec.update({k: probe[k] for k in ("p50_ms", "range_ms", "size_bytes", "params", "macs")})
        rec["fidelities"]["1"] = probe["val_accuracy"]  # the probe is the one-epoch fidelity
        rec["pruned"] = probe["range_ms"][0] > max_p50_ms
        progress(f"{c.name}: p50 {probe['p50_ms'] * 1e3:.1f} µs (processes {probe['range_ms'][0] * 1e3:.1f}-"
                 f"{probe['range_ms'][1] * 1e3:.1f}), {probe['macs']:,} MACs"
                 + (": over the limit in every process, dropped before training" if rec["pruned"] else ""))
        if not rec["pruned"]:
            alive.append(c)
    # 2. successive halving on the validation split
    epochs = rungs(cfg.student.train.epochs)
    for i, e in enumerate(epochs[:-1] if alive else []):
        todo = [c for c in alive if str(e) not in records[c.name]["fidelities"]]
        results = _train_all(config, base, run_dir, [(f"{c.name}-e{e}", c.overrides(e)) for c in todo], jobs)
        for c in todo:
            records[c.name]["fidelities"][str(e)] = results[f"{c.name}-e{e}"]["val_accuracy"]
        alive.sort(key=lambda c: -records[c.name]["fidelities"][str(e)])
        keep = FINALISTS if i == len(epochs) - 2 else max(FINALISTS, math.ceil(len(alive) / ETA))
        progress(f"rung {i + 1} ({e} epochs): " + ", ".join(f"{c.name} {records[c.name]['fidelities'][str(e)]:.2%}"
                                                           for c in alive) + f"; {min(keep, len(alive))} go on")
        alive = alive[:keep]
    # 3. the finalists in full, timed on the target again; the test split read for them only
    for c in alive:
        final = _measured(config, [*base, *c.overrides(epochs[-1])], run_dir, c.name, target, fmt, report=True)
        records[c.name]["final"] = final
        records[c.name]["fidelities"][str(epochs[-1])] = final["val_accuracy"]
        progress(f"{c.name} in full: val {final['val_accuracy']:.2%}, p50 {final['p50_ms'] * 1e3:.1f} µs")
    return _summary(records, [c.name for c in alive], target, max_p50_ms, fmt, epochs, run_dir)


def _train_all(config: Path, base: list[str], run_dir: Path, tasks: list[tuple[str, list[str]]], jobs: int) -> dict:
    if not tasks:
        return {}
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=get_context("spawn")) as pool:
        futures = {name: pool.submit(train_variant, str(config), [*base, *extra], str(run_dir), name, threads)
                   for name, extra in tasks}
        return {name: future.result() for name, future in futures.items()}


def _summary(records: dict, finalists: list[str], target: str, max_p50_ms: float, fmt: str, epochs: list[int],
             run_dir: Path) -> dict:
    fits = [n for n in finalists if records[n]["final"]["p50_ms"] <= max_p50_ms]
    # the most accurate on validation; of equally accurate ones, the faster
    ranked = sorted(fits, key=lambda n: (-records[n]["final"]["val_accuracy"], records[n]["final"]["p50_ms"]))
    answer = ranked[0] if ranked else None
    runner_up = next((n for n in finalists if n != answer), None)
    why = None
    if runner_up and answer:
        a, b = records[answer]["final"], records[runner_up]["final"]
        why = (f"over the limit when re-measured (p50 {b['p50_ms'] * 1e3:.1f} µs)" if runner_up not in fits else
               f"lower validation accuracy ({b['val_accuracy']:.2%} against {a['val_accuracy']:.2%})"
               if b["val_accuracy"] != a["val_accuracy"] else
               f"the same validation accuracy ({a['val_accuracy']:.2%}) at a slower p50 ({b['p50_ms'] * 1e3:.1f} µs "
               f"against {a['p50_ms'] * 1e3:.1f} µs" + ("; their per-process ranges overlap: within noise, either "
                                                       "will do)" if b["range_ms"][0] <= a["range_ms"][1] else ")"))
    summary = {"schema": "edgekd.search/1", "target": target, "format": fmt,
               "max_p50_ms": max_p50_ms if math.isfinite(max_p50_ms) else None,
               "fidelities": epochs, "candidates": list(records.values()), "finalists": finalists,
               "answer": answer, "runner_up": runner_up, "runner_up_lost": why,
               "pruned_before_training": [n for n, r in records.items() if r.get("pruned")]}
    layout = RunLayout(run_dir)
    write_json(layout.search, summary)
    write_bytes(layout.search_plot, search_plot(summary))
    return summary


def search_plot(summary: dict) -> bytes:
    """Best validation accuracy reached against the p50 of the one-epoch copy, the limit as a line, the
    front of candidates no other beats on both, and the answer ringed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = []
    for c in summary["candidates"]:
        x = 1e3 * c["p50_ms"]
        if not c["fidelities"]:
            ax.scatter([x], [0], marker="x", color="grey")
            continue
        epochs = max(c["fidelities"], key=int)
        y = 100 * c["fidelities"][epochs]
        pts.append((x, y))
        ax.scatter([x], [y], color="tab:blue", zorder=3)
        if c["name"] == summary["answer"]:
            ax.scatter([x], [y], s=220, facecolors="none", edgecolors="tab:red", linewidths=2, zorder=4, label="answer")
        ax.annotate(f"{c['name']} ({epochs} ep)", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = [p for p in pts if not any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in pts)]
    if front:
        front.sort()
        ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="tab:green", label="front")
    if summary["max_p50_ms"] is not None:
        ax.axvline(1e3 * summary["max_p50_ms"], color="tab:red", linestyle=":", label="p50 limit")
    ax.set_xlabel(f"p50 on {summary['target']}, µs ({summary['format']}, one-epoch copy)")
    ax.set_ylabel("validation accuracy, % (highest fidelity reached)")
    ax.set_title("edgekd search (x: dropped before training)")
    ax.legend(fontsize=8)
    return png_bytes(fig)
