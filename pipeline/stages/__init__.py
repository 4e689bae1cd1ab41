"""The stage table: every stage of `edgekd run`, in order, with what it reads and what it writes.

    Stage(name, run, reads_config, needs, shared, reads_files)

`run` is "module:function" in this package (imported only when the stage runs, so commands that
never train never import torch). `reads_config` is the part of the config the stage's result
depends on: its hash decides whether the stage is fresh. `needs` names the stages whose outputs it
reads: their recorded output hashes are its input hashes, and `--force` propagates along them.
`shared` stages write files every student variant of the run uses (the teacher, the calibration set).
`reads_files` names files outside the run (a teacher trained elsewhere, the source files of a user's
model class): their sha256 are inputs too, so editing a user model re-runs every stage that builds it.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Callable

from edgekd.errors import UsageError
from edgekd.pipeline.config import PipelineConfig


def _training(cfg: PipelineConfig) -> dict:
    """What changes trained weights besides the model's own section: seed, device, thread count."""
    return {"seed": cfg.run.seed, "device": cfg.run.device, "threads": cfg.run.threads}


def _transfer(cfg: PipelineConfig) -> dict:
    return {"transfer_copies": cfg.distill.transfer_copies, "transfer_jitter": cfg.distill.transfer_jitter,
            "transfer": dataclasses.asdict(cfg.distill.transfer)}


def _sources(cfg: PipelineConfig, *roles: str) -> tuple[str, ...]:
    """The user's source files behind the architectures of `roles` (teacher, baseline, student):
    'file.py:Class', or 'package.module:Class' in a local file (models.registry.source_files)."""
    archs = {cfg.teacher.arch if role == "teacher" else cfg.student.arch for role in roles}
    if not any(":" in arch for arch in archs):
        return ()  # built-in architectures only (and no torch import for commands that never build a model)
    from edgekd.models.registry import source_files

    return tuple(sorted({f for arch in archs for f in source_files(arch)}))


def _teacher_files(cfg: PipelineConfig) -> tuple[str, ...]:
    return ((cfg.teacher.checkpoint,) if cfg.teacher.checkpoint else ()) + _sources(cfg, "teacher")


def _export(cfg: PipelineConfig) -> dict:
    # the calibration set enters through the quantize stage's output hash
    return {k: v for k, v in dataclasses.asdict(cfg.export).items() if k != "calibration_samples"}


@dataclass(frozen=True)
class Stage:
    name: str
    run: str
    reads_config: Callable[[PipelineConfig], dict]
    needs: Callable[[PipelineConfig], tuple[str, ...]]
    shared: bool = False
    reads_files: Callable[[PipelineConfig], tuple[str, ...]] = lambda c: ()

    def function(self) -> Callable:
        module, _, fn = self.run.partition(":")
        return getattr(importlib.import_module(f"edgekd.pipeline.stages.{module}"), fn)


STAGES: tuple[Stage, ...] = (
    Stage("teacher", "teacher:train_teacher", lambda c: {**_training(c), **c.section("teacher")},
          lambda c: (), shared=True, reads_files=_teacher_files),
    Stage("baseline", "baseline:train_baseline", lambda c: {**_training(c), **c.section("student"), **_transfer(c)},
          lambda c: (), reads_files=lambda c: _sources(c, "baseline")),
    Stage("student", "student:train_student", lambda c: {**_training(c), **c.section("student", "distill")},
          lambda c: ("teacher",), reads_files=lambda c: _sources(c, "student", "teacher")),
    Stage("quantize", "quantize:select_calibration",
          lambda c: {"seed": c.run.seed, "calibration_samples": c.export.calibration_samples}, lambda c: (), shared=True),
    Stage("export", "export:export_models", _export, lambda c: (*c.export.models, "quantize"),
          reads_files=lambda c: _sources(c, *c.export.models)),
    Stage("bench", "bench:bench_stage",
          lambda c: {**c.section("bench"), "targets": {t: c.targets.get(t) for t in c.bench.targets}},
          lambda c: ("export", *c.bench.eager), reads_files=lambda c: _sources(c, *c.bench.eager)),
    Stage("report", "report:report_stage", lambda c: {}, lambda c: ("export", "bench")),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
BY_NAME = {s.name: s for s in STAGES}


def check_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise UsageError(f"unknown stage {', '.join(map(repr, unknown))}; valid stages in order: {', '.join(STAGE_NAMES)}")


def downstream(names: set[str], cfg: PipelineConfig) -> set[str]:
    """`names` and every stage that reads their outputs, directly or through another stage."""
    out = set(names)
    changed = True
    while changed:
        changed = False
        for stage in STAGES:
            if stage.name not in out and out & set(stage.needs(cfg)):
                out.add(stage.name)
                changed = True
    return out
