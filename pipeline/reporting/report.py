"""`edgekd report`: report.json (schema edgekd.report/1), report.md and a self-contained report.html.

Sizes and hashes are read from the files on disk, not copied from the manifest, so the report says
what is there now. Results come from bench/<target>.json plus any files given with --add, which are
merged into bench/<target>.json so that a later report keeps them.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import math
import tomllib
import json
import logging
from pathlib import Path

from edgekd import __version__
from edgekd.bench.adb import RUNTIME as ADB_RUNTIME
from edgekd.errors import DataError
from edgekd.fileio import sha256_file, write_json, write_text
from edgekd.paired import correct_mask
from edgekd.pipeline.layout import RunLayout
from edgekd.pipeline.lock import run_lock
from edgekd.pipeline.manifest import RunRecords
from edgekd.pipeline.reporting.markdown import markdown, rows
from edgekd.pipeline.reporting.recommend import recommend
from edgekd.pipeline.sweep import load as load_sweep
from edgekd.pipeline.reporting.schema import bench_file_problems

log = logging.getLogger(__name__)

RESULT_KEYS = ("artifact", "target", "sha256", "runtime", "runtime_version", "threads", "delegate", "device", "latency_ms",
               "init_ms", "first_ms", "peak_rss_mb", "runtime_rss_mb", "model_rss_mb", "rss_increase_mb",
               "process_peak_rss_mb", "process_runtime_rss_mb", "accuracy", "accuracy_on", "n_eval", "correct_bits",
               "thermal", "started_at", "ended_at", "samples_ms", "op_profile")


def read_bench(path: Path) -> tuple[list[dict], list[dict]]:
    """The results and skipped rows of an agent output file; DataError (exit 2) listing every problem."""
    try:
        blob = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a readable results file ({type(exc).__name__}: {exc}); expected "
                        "bench/agent.py output") from None
    results, skipped, problems = bench_file_problems(blob)
    if problems:
        raise DataError(f"{path}: not a valid results file, {len(problems)} problem(s):\n" +
                        "\n".join(f"  - {p}" for p in problems[:20]) + ("\n  ..." if len(problems) > 20 else ""))
    return results, skipped


def _run_files(layout: RunLayout) -> dict[str, str]:
    """sha256 of every file a result may name (exported files, checkpoints), as the report names them."""
    records = RunRecords(layout)
    return {layout.rel(path): records.sha256(path) for stage in ("export", "teacher", "baseline", "student")
            for path in records.outputs(stage) if not path.name.endswith(".json")}


def split_stale(rows: list[dict], current: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """(rows measured on the file there now, stale rows): a row whose sha256 is not its file's was
    measured before a re-export, a retraining or a deletion, and is listed, never used."""
    fresh, stale = [], []
    for r in rows:
        if current.get(r["artifact"]) == r["sha256"]:
            fresh.append(r)
        else:
            stale.append({"target": r["target"], "artifact": r["artifact"], "sha256": r["sha256"],
                          "measured_at": r.get("ended_at"),
                          "why": "file re-created since" if r["artifact"] in current else "file no longer in the run"})
    return fresh, stale


def _check_provenance(path: Path, results: list[dict], files: dict[str, str]) -> None:
    """Refuse results measured on a file that is not this run's (another model, an older export)."""
    problems = []
    for r in results:
        name, sha = r["artifact"], r["sha256"]
        if name not in files:
            problems.append(f"{name}: not a file of this run (its files: {', '.join(sorted(files))})")
        elif sha != files[name]:
            problems.append(f"{name}: measured a file with sha256 {sha[:16]}..., but this run's {name} has "
                            f"sha256 {files[name][:16]}...; measure this run's file (edgekd pack RUN_DIR -o B.zip)")
    if problems:
        raise DataError(f"{path}: {len(problems)} result(s) are not of this run:\n" +
                        "\n".join(f"  - {p}" for p in problems))


def _within_sampling(value: float, samples: list[float], q: float) -> bool:
    """Whether `value` can be the q-quantile of the full pool that `samples` were evenly drawn from: it
    lies between the sample order statistics 4 binomial standard errors either side of rank q*m."""
    s, m = sorted(samples), len(samples)
    spread = 4 * math.sqrt(m * q * (1 - q)) + 2
    lo, hi = s[max(0, math.floor(q * m - spread))], s[min(m - 1, math.ceil(q * m + spread))]
    return lo - 1e-9 <= value <= hi + 1e-9


def summary_problems(r: dict) -> list[str]:
    """Where a result's summary disagrees with the samples the agent kept beside it (a hand-edited
    accuracy, p50 or peak): every statistic is recomputed from `correct_bits`, `samples_ms`,
    `process_p50` and `process_peak_rss_mb`."""
    from edgekd.bench.agent.stats import median_interval, percentiles

    name, p = f"{r['artifact']} on {r['target']}", []
    bits, n = r.get("correct_bits"), r["n_eval"]
    if r.get("accuracy") is not None:
        if not bits:
            p.append(f"{name}: no correct_bits to check its accuracy against; measure it with this edgekd's agent")
        elif abs(sum(correct_mask(bits, n)) / n - r["accuracy"]) > 1e-9:
            p.append(f"{name}: accuracy {r['accuracy']:.4%} but its per-sample results give "
                     f"{sum(correct_mask(bits, n)) / n:.4%}")
    lat, samples, medians = r["latency_ms"], r.get("samples_ms") or [], r["latency_ms"].get("process_p50")
    if not medians:
        p.append(f"{name}: no process_p50 to check its latency against; measure it with this edgekd's agent")
    else:
        lo, hi, _ = median_interval(medians)
        if max(abs(lo - lat["p50_ci95"][0]), abs(hi - lat["p50_ci95"][1])) > 1e-9 * max(hi, 1.0):
            p.append(f"{name}: p50_ci95 {lat['p50_ci95']} but its per-process medians give [{lo:.6g}, {hi:.6g}]")
    if samples:  # benchmark_model (adb) keeps no samples, only its per-process medians
        again = percentiles(samples)
        for key, q in (("p50", 0.5), ("p95", 0.95)):
            if lat.get(key) is None:
                continue
            # every sample was kept: exact; at most 5,000 evenly spaced were kept: within their sampling error
            same = (abs(again[key] - lat[key]) <= 1e-4 * max(abs(lat[key]), 1e-9) if again["n"] == lat.get("n")
                    else _within_sampling(lat[key], samples, q))
            if not same:
                p.append(f"{name}: latency {key} {lat[key]:.6g} ms but its samples give {again[key]:.6g} ms")
    elif r.get("runtime") != ADB_RUNTIME:
        p.append(f"{name}: no samples_ms to check its latency against; measure it with this edgekd's agent")
    peaks = [v for v in r.get("process_peak_rss_mb") or [] if v is not None]
    if r.get("peak_rss_mb") is not None and peaks and abs(max(peaks) - r["peak_rss_mb"]) > 1e-6:
        p.append(f"{name}: peak_rss_mb {r['peak_rss_mb']:.6g} but its processes peaked at {max(peaks):.6g}")
    return p


def merge_added(layout: RunLayout, added: list[Path]) -> list[Path]:
    """Fold results measured elsewhere into bench/<target>.json (a re-measured artifact replaces the old row).

    Every result must name a file of this run and carry that file's sha256; nothing is written otherwise.
    """
    files = _run_files(layout)
    n_test = RunRecords(layout).root.data.get("data", {}).get("n_test")
    written = []
    checked = [(path, *read_bench(path)) for path in added]
    for path, results, _ in checked:
        _check_provenance(path, results, files)
        problems = [f"{r['artifact']} on {r['target']}: scored on {r['n_eval']} samples, but this run's "
                    f"data/eval.npz has {n_test}; measure with the run's eval set (edgekd pack)"
                    for r in results if r.get("accuracy") is not None and n_test and r["n_eval"] != n_test]
        problems += [q for r in results for q in summary_problems(r)]
        if problems:
            raise DataError(f"{path}: {len(problems)} result(s) disagree with their own samples (edited by hand?), "
                            "nothing merged:\n" + "\n".join(f"  - {q}" for q in problems) +
                            "\nmerge results exactly as the agent wrote them")
    for path, results, skipped in checked:
        target_of_file = {r["target"] for r in results}
        by_target: dict[str, list[dict]] = {t: [r for r in results if r["target"] == t] for t in target_of_file}
        for target, new in by_target.items():
            dest = layout.bench_file(target)
            old, old_skipped = read_bench(dest) if dest.exists() else ([], [])
            names = {r["artifact"] for r in new}
            merged = [r for r in old if r["artifact"] not in names] + new
            kept_skips = [s for s in old_skipped if s["artifact"] not in names] + (skipped if len(by_target) == 1 else [])
            write_json(dest, {"schema": "edgekd.bench/1", "target": target, "results": merged, "skipped": kept_skips})
            written.append(dest)
            log.info("merged %d result(s) from %s into %s", len(new), path, dest)
    return written


def verify_inputs(layout: RunLayout, records: RunRecords) -> None:
    """Every file of the run must be what edgekd wrote, and every bench file one it wrote or merged."""
    records.verify()
    strangers = [layout.rel(p) for p in sorted(layout.bench_dir.glob("*.json")) if records.sha256(p) is None]
    if strangers:
        raise DataError(f"{layout.home}: {', '.join(strangers)} not written by edgekd; merge results measured "
                        "elsewhere with `edgekd report RUN_DIR --add RESULT.json`")


def build_report(layout: RunLayout) -> dict:
    records = RunRecords(layout)
    manifest, stage = records.root, records.stage
    if not all(stage(s).get("status") == "done" for s in ("teacher", "student")):
        raise DataError(f"{layout.home}: no trained teacher and student recorded; run `edgekd run CONFIG` first")
    data = manifest.data["data"]
    models = {m: {k: stage(m)["metrics"][k] for k in ("arch", "params", "macs", "accuracy")}
              for m in ("teacher", "baseline", "student") if stage(m).get("status") == "done"}
    artifacts = []
    for a in stage("export").get("metrics", {}).get("artifacts", []):
        file = layout.home / a["file"]
        if not file.exists():
            continue
        artifacts.append({"file": a["file"], "model": a["model"], "format": a["format"], "precision": a["precision"],
                          "size_bytes": file.stat().st_size, "sha256": sha256_file(file),
                          "parity": {k: a["parity"][k] for k in ("top1_agreement", "max_abs_diff", "n")},
                          "audit": a["audit"],
                          **({"int8_method": a.get("int8_method") or "ptq", "quantization": a.get("quantization")}
                             if a["precision"] == "int8" else {})})
    current = _run_files(layout)  # recorded hashes; verify_inputs has checked them against the disk
    results, stale, skipped, targets = [], [], [], []
    for path in sorted(layout.bench_dir.glob("*.json")):
        rows, missed = read_bench(path)
        fresh, old = split_stale([{k: r.get(k) for k in RESULT_KEYS if k in r} for r in rows], current)
        results += fresh
        stale += old
        skipped += [{"target": path.stem, **s} for s in missed]
        meta = json.loads(path.read_text())
        targets.append({"target": path.stem, **{k: meta[k] for k in ("kind", "status", "error", "attempts", "started_at",
                                                                      "ended_at") if k in meta}})
    student = stage("student").get("metrics", {})
    distillation = {k: student[k] for k in ("temperature", "alpha", "transfer_classes", "bias_correction", "hints")
                    if k in student}
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return {"schema": "edgekd.report/1",
            "run": {"name": manifest.data.get("run"), "created": created, "config_hash": manifest.data.get("config_hash"),
                    "edgekd_version": __version__},
            "dataset": {"name": data["name"], "num_classes": data["num_classes"], "input_shape": data["input_shape"],
                        "n_train": data["n_train"], "n_test": data["n_test"]},
            "models": models, "distillation": distillation, "artifacts": artifacts, "results": results,
            "stale": stale, "skipped": skipped, "targets": targets, **({"sweep": sweep} if (sweep := load_sweep(layout.root)) else {})}


def _max_int8_drop(layout: RunLayout) -> float:
    """The run's export.max_int8_drop, read from its resolved config without importing the pipeline."""
    try:
        return float(tomllib.loads(layout.config.read_text()).get("export", {}).get("max_int8_drop", 0.01))
    except (OSError, ValueError, tomllib.TOMLDecodeError):
        return 0.01


def _budget_fails(report: dict, budgets: Path | None) -> set[tuple[str, str]]:
    if budgets is None:
        return set()
    from edgekd.pipeline.reporting.budgets import load_budgets
    from edgekd.pipeline.reporting.gate import check

    return {(v.target, v.artifact) for v in check(report, load_budgets(budgets)[0]) if v.status == "fail"}


def write_report(layout: RunLayout, added: list[Path] = (), standalone: bool = True,
                 budgets: Path | None = None) -> list[Path]:
    """Merge `added`, check every input against the manifest, then write report.json, report.md,
    report.html (+ plots/). Standalone (`edgekd report`) it takes the run's lock and records what it
    wrote; as the report stage, the stage runner does both."""
    with run_lock(layout.lock) if standalone else contextlib.nullcontext():
        records = RunRecords(layout)
        if standalone:
            records.verify()  # before merging anything into a run that is not what it was
        if added:
            records.home.record_files("add", merge_added(layout, list(added)))
        verify_inputs(layout, records)
        report = build_report(layout)
        report["recommendations"] = recommend(report, _max_int8_drop(layout), _budget_fails(report, budgets))
        paths = _write_files(layout, report)
        if standalone:
            records.home.record_files("report", paths)
    return paths


def _write_files(layout: RunLayout, report: dict) -> list[Path]:
    from edgekd.pipeline.reporting.html import html_report

    write_json(layout.report_json, report)
    md = markdown(report)
    write_text(layout.report_md, md)
    return [layout.report_json, layout.report_md,
            *html_report(report, rows(report), md, layout.report_html, layout.plots, layout.sweep_plot)]
