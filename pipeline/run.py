"""`edgekd run`: prepare data, then run the stages in order, skipping those that are fresh.

Stage order and dependencies are fixed here. Each stage's config hash covers only the config
sections it reads; its input hashes cover the data and the files it loads, so changing the
temperature re-runs the student but neither the teacher nor the baseline, and a new benchmark
setting re-runs bench and report only.
"""
from __future__ import annotations

import dataclasses
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from edgekd import __version__
from edgekd.pipeline.bench_stage import bench_stage
from edgekd.pipeline.config import PipelineConfig
from edgekd.pipeline.data import prepare, write_eval
from edgekd.pipeline.distill import train_student
from edgekd.errors import UsageError
from edgekd.pipeline.export_stage import export_models
from edgekd.fileio import sha256_file, sha256_json, write_json, write_text
from edgekd.pipeline.manifest import Manifest
from edgekd.pipeline.progress import SilentProgress, TrainProgress
from edgekd.pipeline.quantize import select_calibration
from edgekd.pipeline.report import report_stage
from edgekd.pipeline.stage import StageContext, StageResult
from edgekd.pipeline.teacher import train_baseline, train_teacher
from edgekd.pipeline.train import pick_device

log = logging.getLogger(__name__)

STAGES: dict[str, Callable[[StageContext], StageResult]] = {
    "teacher": train_teacher,
    "baseline": train_baseline,
    "student": train_student,
    "quantize": select_calibration,
    "export": export_models,
    "bench": bench_stage,
    "report": report_stage,
}
# the file each stage writes that later stages read
PRODUCES = {"teacher": "teacher.pt", "baseline": "baseline.pt", "student": "student.pt",
            "quantize": "data/calibration.npz", "export": "manifest.json#export", "bench": "bench/local.json"}
MODEL_STAGES = ("teacher", "baseline", "student")


def stage_inputs(stage: str, cfg: PipelineConfig) -> tuple[str, ...]:
    """Files (relative to the run directory) `stage` reads; their sha256 is part of its input hash."""
    if stage == "student":
        return ("teacher.pt",)
    if stage == "export":
        return (*(PRODUCES[m] for m in cfg.export.models), "data/calibration.npz")
    if stage == "bench":  # the export stage's files are hashed through its manifest entry
        return ("manifest.json#export", *(PRODUCES[m] for m in cfg.bench.eager))
    if stage == "report":
        return ("bench/local.json",)
    return ()


def stage_config(stage: str, cfg: PipelineConfig) -> dict:
    """The part of the config that `stage` reads (data settings enter through the data hash)."""
    seed = {"seed": cfg.run.seed}
    transfer = {"transfer_copies": cfg.distill.transfer_copies, "transfer_jitter": cfg.distill.transfer_jitter}
    export = cfg.section("export")["export"]
    return {
        "teacher": lambda: {**seed, **cfg.section("teacher")},
        "baseline": lambda: {**seed, **cfg.section("student"), "transfer": transfer},
        "student": lambda: {**seed, **cfg.section("student", "distill")},
        "quantize": lambda: {**seed, "calibration_samples": export["calibration_samples"]},
        "export": lambda: {k: v for k, v in export.items() if k != "calibration_samples"},
        "bench": lambda: cfg.section("bench"),
        "report": lambda: {},
    }[stage]()


def downstream(stages: set[str], cfg: PipelineConfig) -> set[str]:
    """`stages` and every stage that reads their outputs."""
    out = set(stages)
    changed = True
    while changed:
        changed = False
        for name in STAGES:
            if name not in out and any(PRODUCES.get(s) in stage_inputs(name, cfg) for s in out):
                out.add(name)
                changed = True
    return out


def _input_hash(run_dir: Path, manifest: Manifest, name: str, stage: str) -> str:
    """sha256 of an input file, or for "manifest.json#STAGE" of what that stage recorded about its outputs."""
    if "#" in name:
        source = manifest.stages.get(name.partition("#")[2], {})
        if source.get("status") != "done":
            raise UsageError(f"stage {stage} needs the {name.partition('#')[2]} stage's outputs; run without --until")
        return sha256_json([manifest.data["artifacts"][rel]["sha256"] for rel in source["outputs"]])
    if not (run_dir / name).exists():
        raise UsageError(f"stage {stage} needs {name}, which no stage of this run has written; run without --until, "
                         "or add the model that writes it")
    return sha256_file(run_dir / name)


@dataclass
class RunSummary:
    run_dir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    artifacts: list[dict] = field(default_factory=list)


def run_pipeline(cfg: PipelineConfig, run_dir: Path, until: str | None = None, force: tuple[str, ...] = (),
                 progress: Callable[[str], TrainProgress] = lambda label: SilentProgress()) -> RunSummary:
    """Run the stages of `cfg` into `run_dir`, up to and including `until`.

    Args:
        cfg: the validated config.
        run_dir: the run directory; created if needed, reused to skip fresh stages.
        until: last stage to run (default: all).
        force: stages to re-run even when fresh; stages that depend on them re-run too.
        progress: makes one progress reporter per training stage.
    """
    for name in (*force, *([until] if until else [])):
        if name not in STAGES:
            raise UsageError(f"unknown stage {name!r}; valid stages in order: {', '.join(STAGES)}")
    selected = list(STAGES)[: list(STAGES).index(until) + 1] if until else list(STAGES)
    forced = downstream(set(force), cfg)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = pick_device(cfg.run.device)
    data = prepare(cfg.data, cfg.run.seed)  # bad data fails before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.rglob(".*.tmp*"):  # left by a killed write; never under a final name
        stale.unlink()
    write_text(run_dir / "config.toml", cfg.to_toml())
    manifest = Manifest.load(run_dir / "manifest.json")
    data_hash = data.fingerprint()
    eval_path = run_dir / "data" / "eval.npz"
    if manifest.data.get("data", {}).get("fingerprint") != data_hash or not eval_path.exists():
        write_eval(data, eval_path)
    manifest.data.update({
        "run": cfg.run.name, "edgekd_version": __version__, "config_hash": sha256_json(dataclasses.asdict(cfg)),
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
                        "device": str(device), "threads": torch.get_num_threads()},
        "data": {**data.summary(), "fingerprint": data_hash},
    })
    manifest.data["artifacts"]["data/eval.npz"] = {"sha256": sha256_file(eval_path),
                                                   "size_bytes": eval_path.stat().st_size, "stage": "data"}
    manifest.save()

    ctx = StageContext(cfg, data, run_dir, device, progress)
    summary = RunSummary(run_dir)
    for stage in selected:
        config_hash = sha256_json(stage_config(stage, cfg))
        inputs = {"data": data_hash, **{f: _input_hash(run_dir, manifest, f, stage) for f in stage_inputs(stage, cfg)}}
        reason = "forced" if stage in forced else manifest.why_stale(stage, config_hash, inputs)
        if reason is None:
            log.info("stage %s: up to date, skipped (config and inputs unchanged)", stage)
            summary.skipped.append(stage)
            continue
        log.info("stage %s: running (%s)", stage, reason)
        manifest.start(stage)
        start = time.perf_counter()
        try:
            result = STAGES[stage](ctx)
        except BaseException as exc:
            manifest.fail(stage, f"{type(exc).__name__}: {exc}")
            raise
        seconds = time.perf_counter() - start
        manifest.finish(stage, seconds=seconds, config_hash=config_hash, input_hashes=inputs,
                        outputs=result.outputs, metrics=result.metrics)
        size = sum(p.stat().st_size for p in result.outputs)
        names = ", ".join(p.name for p in result.outputs) if len(result.outputs) <= 2 else f"{len(result.outputs)} files"
        log.info("stage %s: done in %.1f s (%s, %.0f KiB)", stage, seconds, names, size / 1024)
        summary.ran.append(stage)

    summary.metrics = {s: manifest.stages[s]["metrics"] for s in MODEL_STAGES
                       if manifest.stages.get(s, {}).get("status") == "done"}
    if manifest.stages.get("export", {}).get("status") == "done":
        summary.artifacts = manifest.stages["export"]["metrics"]["artifacts"]
    write_json(run_dir / "metrics.json", {"run": cfg.run.name, "data": data.summary() | {"fingerprint": data_hash},
                                          "models": summary.metrics})
    return summary
