"""The bench stage and `edgekd bench`: every exported file measured by the agent on this machine.

Each file runs in its own process (bench/agent.py), so one model's memory never counts against
another's; the PyTorch eager rows run in their own process too (pipeline/eager.py).
Results go to bench/<target>.json (schema edgekd.bench/1).
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import bench.agent
from pipeline.errors import DataError, MissingDependency
from pipeline.fileio import write_json
from pipeline.manifest import Manifest

if TYPE_CHECKING:  # both import torch; `edgekd bench` and `edgekd pack` do not need it here
    from pipeline.config import BenchConfig
    from pipeline.stage import StageContext, StageResult

log = logging.getLogger(__name__)

AGENT = Path(bench.agent.__file__).resolve()


def exported_files(run_dir: Path) -> list[Path]:
    """The model files the export stage recorded, in its order."""
    stage = Manifest.load(run_dir / "manifest.json").stages.get("export", {})
    if stage.get("status") != "done":
        raise DataError(f"{run_dir}: no finished export stage; run `edgekd run CONFIG` (through export) first")
    return [run_dir / rel for rel in stage["outputs"] if Path(rel).suffix in (".onnx", ".tflite")]


def _run(cmd: list[str], what: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        proc = subprocess.run([*cmd, "-o", str(out)], capture_output=True, text=True)
        if proc.returncode != 0:
            message = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
            error = MissingDependency if proc.returncode == 3 else DataError
            raise error(f"benchmark of {what} failed: {message}")
        return json.loads(out.read_text())


def bench_local(run_dir: Path, cfg: BenchConfig, progress=print) -> Path:
    """Measure every exported file and the eager checkpoints locally; write bench/local.json."""
    eval_path = run_dir / "data" / "eval.npz"
    timing = ["--threads", str(cfg.threads), "--min-runs", str(cfg.min_runs), "--min-seconds", str(cfg.min_seconds)]
    jobs = [(f.relative_to(run_dir).as_posix(), [sys.executable, str(AGENT), str(f), "--eval", str(eval_path),
                                                 "--warmup", str(cfg.warmup), *timing]) for f in exported_files(run_dir)]
    jobs += [(f"{m}.pt", [sys.executable, "-m", "pipeline.eager", str(run_dir / f"{m}.pt"), "--eval", str(eval_path),
                          *timing]) for m in cfg.eager if (run_dir / f"{m}.pt").exists()]
    results = []
    for i, (name, cmd) in enumerate(jobs, 1):
        result = _run(cmd, name)
        result["artifact"] = name
        lat = result["latency_ms"]
        progress(f"[{i}/{len(jobs)}] {name}: p50 {lat['p50'] * 1e3:.1f} µs (95% CI {lat['p50_ci95'][0] * 1e3:.1f}-"
                 f"{lat['p50_ci95'][1] * 1e3:.1f}), p95 {lat['p95'] * 1e3:.1f} µs, peak RSS {result['peak_rss_mb']:.0f} MB, "
                 f"accuracy {result['accuracy']:.2%}")
        results.append(result)
    path = run_dir / "bench" / "local.json"
    write_json(path, {"schema": "edgekd.bench/1", "target": "local", "results": results})
    return path


def bench_stage(ctx: StageContext) -> StageResult:
    from pipeline.stage import StageResult

    path = bench_local(ctx.run_dir, ctx.cfg.bench, progress=log.info)
    return StageResult([path], {"results": len(json.loads(path.read_text())["results"])})
