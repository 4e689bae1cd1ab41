"""The bench stage: every exported file measured on every target of `bench.targets` (this machine by
default), and the PyTorch eager checkpoints on the local target.

Targets run concurrently, those timing on this machine's CPU one at a time (`edgekd.bench.fleet`).
Each writes bench/<target>.json; a target that failed writes why, and the others still count; when
every target fails nothing is written. Files of targets not measured this time are kept (`edgekd bench
--target pi4` does not forget local); the report drops their rows of files re-created since.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from edgekd.bench.agent.jobs import Job
from edgekd.bench.agent.worker import Timing
from edgekd.bench.fleet import Outcome, measure_fleet
from edgekd.bench.kinds import TargetConfig, load
from edgekd.bench.local import LocalTarget
from edgekd.bench.targets import BenchOptions
from edgekd.errors import CheckFailed, DataError, MissingDependency
from edgekd.export.formats import is_model_file
from edgekd.fileio import sha256_file, write_json
from edgekd.pipeline import eager
from edgekd.pipeline.console import fmt_ms
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


def make_target(name: str, t: TargetConfig, cfg: BenchConfig):
    """A target of edgekd.bench from its typed table, with the run's bench settings as defaults."""
    options = BenchOptions(tuple(t.threads) or (cfg.threads,), t.processes or cfg.processes,
                           Timing(cfg.warmup, cfg.min_runs, cfg.min_seconds), t.timeout_s, cfg.profile)
    return load(t.kind).build(name, t, options)


def _document(outcome: Outcome) -> dict:
    doc = {"schema": "edgekd.bench/1", "target": outcome.target, "kind": outcome.kind, "status": outcome.status,
           "started_at": outcome.started_at, "ended_at": outcome.ended_at, "attempts": outcome.attempts,
           "results": outcome.document.get("results", []), "skipped": outcome.document.get("skipped", [])}
    return {**doc, "error": outcome.error} if outcome.error else doc


def bench_targets(layout: RunLayout, cfg, progress=print) -> list[Outcome]:
    """Measure on cfg.bench.targets; the outcome of each target (nothing is written here)."""
    b, definitions = cfg.bench, cfg.target_configs()
    files = exported_files(layout)
    targets = [make_target(name, definitions[name], b) for name in b.targets]
    timing = Timing(b.warmup, b.min_runs, b.min_seconds)
    eager_jobs = [Job(layout.rel(c), eager.worker_command(c, layout.eval_set, b.threads, timing))
                  for c in (layout.checkpoint(m) for m in b.eager) if c.exists()]
    local = [t.name for t in targets if isinstance(t, LocalTarget)]
    log.info("bench: %d files on %s, %d processes per file", len(files), ", ".join(b.targets), b.processes)
    outcomes = measure_fleet(targets, files, layout.eval_set, {name: eager_jobs for name in local[:1]},
                             b.max_parallel, progress=log.debug)
    for outcome in outcomes:
        if outcome.status != "ok":
            progress(f"{outcome.target}: {outcome.status} after {outcome.attempts} attempt(s): {outcome.error}")
        for r in outcome.document.get("results", []):
            lat = r["latency_ms"]
            mark = " [throttled]" if r.get("thermal", {}).get("throttled") else ""
            memory = "not measured" if r.get("peak_rss_mb") is None else f"{r['peak_rss_mb']:.0f} MB"
            progress(f"{outcome.target}: {r['artifact']} ({r['threads']} thr): p50 {fmt_ms(lat['p50'])}{mark} "
                     f"(process range {fmt_ms(lat['p50_ci95'][0])}-{fmt_ms(lat['p50_ci95'][1])}), "
                     f"peak RSS {memory}, accuracy {r['accuracy']:.2%} ({r.get('accuracy_on', 'device')})")
    return outcomes


def bench_stage(ctx: StageContext) -> StageResult:
    from edgekd.pipeline.stages.context import StageResult

    outcomes = bench_targets(ctx.layout, ctx.cfg, progress=log.info)
    failed = [o for o in outcomes if o.status != "ok"]
    if len(failed) == len(outcomes):
        # nothing written: a file the manifest does not record would block the next report and bench
        error = MissingDependency if any(o.status == "missing" for o in failed) else CheckFailed
        raise error("every target failed (bench/ is unchanged):\n" +
                    "\n".join(f"  - {o.target}: {o.error}" for o in failed))
    written = []
    for outcome in outcomes:
        path = ctx.layout.bench_file(outcome.target)
        write_json(path, _document(outcome))
        written.append(path)
    # files of targets not measured now stay part of the stage's output while unchanged; the report
    # uses only their rows whose sha256 is still the file's
    records = RunRecords(ctx.layout)
    kept = [p for p in sorted(ctx.layout.bench_dir.glob("*.json")) if p not in written
            and records.sha256(p) == sha256_file(p) and json.loads(p.read_text()).get("target") not in ctx.cfg.bench.targets]
    return StageResult(written + kept, {"targets": {o.target: {"status": o.status, "error": o.error,
                                                               "started_at": o.started_at, "ended_at": o.ended_at}
                                                    for o in outcomes}})
