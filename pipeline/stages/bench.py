"""The bench stage: every exported file, and the PyTorch eager checkpoints, measured on this machine.

Every file is timed in `bench.processes` fresh processes, scheduled round-robin by the agent, so
that one model's memory never counts against another's and the report can state the
process-to-process spread. Results go to bench/local.json.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from edgekd.bench.agent import AgentError, Job, Timing
from edgekd.bench.targets import BenchOptions, LocalTarget
from edgekd.errors import DataError, MissingDependency
from edgekd.export.formats import is_model_file
from edgekd.fileio import write_json
from edgekd.pipeline import eager
from edgekd.pipeline.layout import RunLayout
from edgekd.pipeline.manifest import RunRecords

if TYPE_CHECKING:  # both import torch; `edgekd pack` does not need it
    from edgekd.pipeline.config import BenchConfig
    from edgekd.pipeline.stages.context import StageContext, StageResult

log = logging.getLogger(__name__)


def exported_files(layout: RunLayout) -> list[Path]:
    """The model files the export stage recorded, in its order."""
    records = RunRecords(layout)
    if records.stage("export").get("status") != "done":
        raise DataError(f"{layout.home}: no finished export stage; run `edgekd run CONFIG` (through export) first")
    return [f for f in records.outputs("export") if is_model_file(f)]


def bench_options(cfg: BenchConfig) -> BenchOptions:
    return BenchOptions(cfg.threads, cfg.processes, Timing(cfg.warmup, cfg.min_runs, cfg.min_seconds))


def bench_local(layout: RunLayout, cfg: BenchConfig, progress=print) -> Path:
    """Measure every exported file and the eager checkpoints locally; write bench/local.json."""
    options = bench_options(cfg)
    eager_jobs = [Job(layout.rel(ckpt), eager.worker_command(ckpt, layout.eval_set, cfg.threads, options.timing))
                  for ckpt in (layout.checkpoint(m) for m in cfg.eager) if ckpt.exists()]
    files = exported_files(layout)
    log.info("bench: %d files x %d processes each, round-robin", len(files) + len(eager_jobs), cfg.processes)
    target = LocalTarget("local", options)
    try:
        target.prepare()
        results = target.run(files, layout.eval_set, eager_jobs, progress=log.debug)
    except AgentError as exc:
        raise (MissingDependency if exc.exit_code == 3 else DataError)(f"benchmark failed: {exc}") from None
    finally:
        target.cleanup()
    for r in results:
        lat = r["latency_ms"]
        progress(f"{r['artifact']}: p50 {lat['p50'] * 1e3:.1f} µs (per-process p50s "
                 f"{lat['p50_ci95'][0] * 1e3:.1f}-{lat['p50_ci95'][1] * 1e3:.1f} over {lat['processes']}), "
                 f"p95 {lat['p95'] * 1e3:.1f} µs, peak RSS {r['peak_rss_mb']:.0f} MB, accuracy {r['accuracy']:.2%}")
    path = layout.bench_file("local")
    write_json(path, {"schema": "edgekd.bench/1", "target": "local", "results": results})
    return path


def bench_stage(ctx: StageContext) -> StageResult:
    from edgekd.pipeline.stages.context import StageResult

    path = bench_local(ctx.layout, ctx.cfg.bench, progress=log.info)
    return StageResult([path])
