"""The bench stage and `edgekd bench`: every exported file measured by the agent on this machine.

Every file (and every PyTorch eager checkpoint) is timed in `bench.processes` fresh processes,
scheduled round-robin by the agent, so that one model's memory never counts against another's and
the report can state the process-to-process spread. Results go to bench/<target>.json.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import edgekd.bench.agent
from edgekd.bench.agent import AgentError, Job, Timing, run_jobs, worker_command
from edgekd.pipeline import eager
from edgekd.errors import DataError, MissingDependency
from edgekd.fileio import write_json
from edgekd.pipeline.manifest import Manifest

if TYPE_CHECKING:  # both import torch; `edgekd bench` and `edgekd pack` do not need it here
    from edgekd.pipeline.config import BenchConfig
    from edgekd.pipeline.stage import StageContext, StageResult

log = logging.getLogger(__name__)

AGENT = Path(edgekd.bench.agent.__file__).resolve()


def exported_files(run_dir: Path) -> list[Path]:
    """The model files the export stage recorded, in its order."""
    stage = Manifest.load(run_dir / "manifest.json").stages.get("export", {})
    if stage.get("status") != "done":
        raise DataError(f"{run_dir}: no finished export stage; run `edgekd run CONFIG` (through export) first")
    return [run_dir / rel for rel in stage["outputs"] if Path(rel).suffix in (".onnx", ".tflite")]


def bench_local(run_dir: Path, cfg: BenchConfig, progress=print) -> Path:
    """Measure every exported file and the eager checkpoints locally; write bench/local.json."""
    eval_path = run_dir / "data" / "eval.npz"
    timing = Timing(cfg.warmup, cfg.min_runs, cfg.min_seconds)
    jobs = [Job(f.relative_to(run_dir).as_posix(), worker_command(f, eval_path, cfg.threads, timing))
            for f in exported_files(run_dir)]
    jobs += [Job(f"{m}.pt", eager.worker_command(run_dir / f"{m}.pt", eval_path, cfg.threads, timing))
             for m in cfg.eager if (run_dir / f"{m}.pt").exists()]
    log.info("bench: %d files x %d processes each, round-robin", len(jobs), cfg.processes)
    try:
        results = run_jobs(jobs, cfg.processes, "local", progress=log.debug)
    except AgentError as exc:
        raise (MissingDependency if exc.exit_code == 3 else DataError)(f"benchmark failed: {exc}") from None
    for r in results:
        lat = r["latency_ms"]
        progress(f"{r['artifact']}: p50 {lat['p50'] * 1e3:.1f} µs (per-process p50s "
                 f"{lat['p50_ci95'][0] * 1e3:.1f}-{lat['p50_ci95'][1] * 1e3:.1f} over {lat['processes']}), "
                 f"p95 {lat['p95'] * 1e3:.1f} µs, peak RSS {r['peak_rss_mb']:.0f} MB, accuracy {r['accuracy']:.2%}")
    path = run_dir / "bench" / "local.json"
    write_json(path, {"schema": "edgekd.bench/1", "target": "local", "results": results})
    return path


def bench_stage(ctx: StageContext) -> StageResult:
    from edgekd.pipeline.stage import StageResult

    path = bench_local(ctx.run_dir, ctx.cfg.bench, progress=log.info)
    return StageResult([path], {"results": len(json.loads(path.read_text())["results"])})
