"""`edgekd report`: report.json (schema edgekd.report/1), report.md and a self-contained report.html.

Sizes and hashes are read from the files on disk, not copied from the manifest, so the report says
what is there now. Results come from bench/<target>.json plus any files given with --add, which are
merged into bench/<target>.json so that a later report keeps them.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from edgekd import __version__
from edgekd.errors import DataError
from edgekd.fileio import sha256_file, write_json, write_text
from edgekd.pipeline.manifest import Manifest

if TYPE_CHECKING:  # pipeline.stage imports torch; `edgekd report` does not need it
    from edgekd.pipeline.stage import StageContext, StageResult

log = logging.getLogger(__name__)

RESULT_KEYS = ("artifact", "target", "sha256", "runtime", "runtime_version", "threads", "device", "latency_ms", "init_ms",
               "first_ms", "peak_rss_mb", "rss_increase_mb", "accuracy", "accuracy_on", "n_eval", "started_at",
               "ended_at", "samples_ms")


def _read_results(path: Path) -> list[dict]:
    try:
        blob = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable results file ({exc}); expected bench/agent.py output") from exc
    results = blob.get("results") if blob.get("schema") == "edgekd.bench/1" else [blob] if blob.get("schema") == "edgekd.result/1" else None
    if results is None:
        raise DataError(f"{path}: schema {blob.get('schema')!r}; expected 'edgekd.bench/1' or 'edgekd.result/1' "
                        "(written by bench/agent.py)")
    for r in results:
        missing = [k for k in ("artifact", "target", "latency_ms", "accuracy") if k not in r]
        if missing:
            raise DataError(f"{path}: a result lacks {', '.join(missing)}")
    return results


def _run_files(run_dir: Path) -> dict[str, str]:
    """sha256 of every file a result may name: the exported files and the checkpoints, as recorded."""
    artifacts = Manifest.load(run_dir / "manifest.json").data["artifacts"]
    return {rel: a["sha256"] for rel, a in artifacts.items() if rel.startswith("export/") or rel.endswith(".pt")}


def _check_provenance(path: Path, results: list[dict], files: dict[str, str]) -> None:
    """Refuse results measured on a file that is not this run's (another model, an older export)."""
    problems = []
    for r in results:
        name, sha = r["artifact"], r.get("sha256")
        if name not in files:
            problems.append(f"{name}: not a file of this run (its files: {', '.join(sorted(files))})")
        elif not sha:
            problems.append(f"{name}: the result carries no sha256 of the file it measured (an older agent); "
                            "re-measure with this run's bench/agent.py (edgekd pack bundles it)")
        elif sha != files[name]:
            problems.append(f"{name}: measured a file with sha256 {sha[:16]}..., but this run's {name} has "
                            f"sha256 {files[name][:16]}...; measure this run's file (edgekd pack RUN_DIR -o B.zip)")
    if problems:
        raise DataError(f"{path}: {len(problems)} result(s) are not of this run:\n" +
                        "\n".join(f"  - {p}" for p in problems))


def merge_added(run_dir: Path, added: list[Path]) -> None:
    """Fold results measured elsewhere into bench/<target>.json (a re-measured artifact replaces the old row).

    Every result must name a file of this run and carry that file's sha256; nothing is written otherwise.
    """
    files = _run_files(run_dir)
    checked = [(path, _read_results(path)) for path in added]
    for path, results in checked:
        _check_provenance(path, results, files)
    for path, results in checked:
        by_target: dict[str, list[dict]] = {}
        for r in results:
            by_target.setdefault(r["target"], []).append(r)
        for target, rows in by_target.items():
            dest = run_dir / "bench" / f"{target}.json"
            old = _read_results(dest) if dest.exists() else []
            new_names = {r["artifact"] for r in rows}
            merged = [r for r in old if r["artifact"] not in new_names] + rows
            write_json(dest, {"schema": "edgekd.bench/1", "target": target, "results": merged})
            log.info("merged %d result(s) from %s into %s", len(rows), path, dest)


def build_report(run_dir: Path) -> dict:
    manifest = Manifest.load(run_dir / "manifest.json")
    stages = manifest.stages
    if not all(stages.get(s, {}).get("status") == "done" for s in ("teacher", "student")):
        raise DataError(f"{run_dir}: not an edgekd run directory with trained models; run `edgekd run CONFIG` first")
    data = manifest.data["data"]
    models = {m: {k: stages[m]["metrics"][k] for k in ("arch", "params", "macs", "accuracy")}
              for m in ("teacher", "baseline", "student") if stages.get(m, {}).get("status") == "done"}
    artifacts = []
    for a in stages.get("export", {}).get("metrics", {}).get("artifacts", []):
        file = run_dir / a["file"]
        if not file.exists():
            continue
        artifacts.append({"file": a["file"], "model": a["model"], "format": a["format"], "precision": a["precision"],
                          "size_bytes": file.stat().st_size, "sha256": sha256_file(file),
                          "parity": {k: a["parity"][k] for k in ("top1_agreement", "max_abs_diff", "n")},
                          "audit": a["audit"]})
    results = []
    for path in sorted((run_dir / "bench").glob("*.json")):
        results += [{k: r.get(k) for k in RESULT_KEYS} for r in _read_results(path)]
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return {"schema": "edgekd.report/1",
            "run": {"name": manifest.data.get("run"), "created": created, "config_hash": manifest.data.get("config_hash"),
                    "edgekd_version": __version__},
            "dataset": {"name": data["name"], "num_classes": data["num_classes"], "input_shape": data["input_shape"],
                        "n_train": data["n_train"], "n_test": data["n_test"]},
            "models": models, "artifacts": artifacts, "results": results}


def rows(report: dict) -> dict[str, list[dict]]:
    """Per target, one row per result with the derived columns the tables and plots show."""
    arts = {a["file"]: a for a in report["artifacts"]}
    models = report["models"]
    out: dict[str, list[dict]] = {}
    for r in report["results"]:
        out.setdefault(r["target"], []).append(r)
    table = {}
    for target, results in out.items():
        ref = next((r for r in results if r["artifact"] == "teacher.pt"), None)
        teacher_size = models["teacher"]["params"] * 4  # fp32 weights: what the eager teacher carries
        lines = []
        for r in results:
            a = arts.get(r["artifact"])
            model = a["model"] if a else r["artifact"].removesuffix(".pt")
            size = a["size_bytes"] if a else models.get(model, {}).get("params", 0) * 4
            lines.append({
                "artifact": r["artifact"], "model": model, "format": a["format"] if a else "pytorch",
                "precision": a["precision"] if a else "fp32", "size_bytes": size,
                "params": models.get(model, {}).get("params"), "macs": models.get(model, {}).get("macs"),
                "p50": r["latency_ms"]["p50"], "p95": r["latency_ms"]["p95"], "ci": r["latency_ms"]["p50_ci95"],
                "peak_rss_mb": r["peak_rss_mb"], "accuracy": r["accuracy"], "runtime": r["runtime"],
                "d_acc": r["accuracy"] - models["teacher"]["accuracy"],
                "speedup": ref["latency_ms"]["p50"] / r["latency_ms"]["p50"] if ref else None,
                "size_ratio": teacher_size / size if size else None, "audit": a["audit"] if a else None,
                "samples": r.get("samples_ms") or [],
            })
        table[target] = lines
    return table


def _fmt_ratio(v: float | None) -> str:
    return f"{v:.1f}x" if v else "n/a"


def markdown(report: dict) -> str:
    ds, models = report["dataset"], report["models"]
    out = [f"# edgekd report: {report['run']['name']}", "",
           f"Dataset `{ds['name']}`: {ds['n_train']} train / {ds['n_test']} test images of shape {ds['input_shape']}, "
           f"{ds['num_classes']} classes. Accuracy is measured by each row's runtime on `data/eval.npz`; latency is "
           "single-sample (batch 1) after warm-up. Speed-up and size ratio are against the teacher's fp32 PyTorch "
           "eager reference (size = its fp32 weights).", "",
           "| model | arch | params | MACs | PyTorch accuracy |", "|---|---|---:|---:|---:|"]
    out += [f"| {m} | {v['arch']} | {v['params']:,} | {v['macs']:,} | {v['accuracy']:.2%} |" for m, v in models.items()]
    for target, lines in rows(report).items():
        out += ["", f"## Target `{target}`", "",
                "| artifact | format | precision | size KiB | params | MACs | p50 ms (95% CI across processes) | p95 ms | peak MB | "
                "accuracy | Δ acc vs teacher | speed-up | size ratio |",
                "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in lines:
            out.append(f"| {r['artifact']} | {r['format']} | {r['precision']} | {r['size_bytes'] / 1024:,.1f} | "
                       f"{r['params']:,} | {r['macs']:,} | {r['p50']:.4f} ({r['ci'][0]:.4f}-{r['ci'][1]:.4f}) | "
                       f"{r['p95']:.4f} | {r['peak_rss_mb']:.0f} | {r['accuracy']:.2%} | {100 * r['d_acc']:+.2f} pts | "
                       f"{_fmt_ratio(r['speedup'])} | {_fmt_ratio(r['size_ratio'])} |")
    out += ["", "## What each file is (read back from the file)", "",
            "| file | kind | weights | weight bits | activations | input | granularity | ops | ops computing in float |",
            "|---|---|---|---:|---|---|---|---:|---|"]
    for a in report["artifacts"]:
        au = a["audit"]
        out.append(f"| {a['file']} | {au['kind']} | {'/'.join(au['weight_dtypes'])} | {au.get('weight_bits') or '-'} | "
                   f"{'/'.join(au['activation_dtypes'])} | {au['input_dtype']} | {au['granularity'] or '-'} | "
                   f"{au['op_count']} | {', '.join(au.get('float_ops', [])) or 'none'} |")
    return "\n".join(out) + "\n"


def write_report(run_dir: Path, added: list[Path] = ()) -> list[Path]:
    """Merge `added`, then write report.json, report.md, report.html (+ plots/)."""
    from edgekd.pipeline.report_html import html_report

    merge_added(run_dir, list(added))
    report = build_report(run_dir)
    json_path, md_path, html_path = run_dir / "report.json", run_dir / "report.md", run_dir / "report.html"
    write_json(json_path, report)
    md = markdown(report)
    write_text(md_path, md)
    plots = html_report(report, rows(report), md, html_path, run_dir / "plots")
    return [json_path, md_path, html_path, *plots]


def report_stage(ctx: StageContext) -> StageResult:
    from edgekd.pipeline.stage import StageResult

    return StageResult(write_report(ctx.run_dir))
