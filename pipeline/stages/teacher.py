"""The teacher stage: train the teacher on the train split with hard labels, or, with
`teacher.checkpoint`, evaluate a teacher trained elsewhere; either way write teacher.pt."""
from __future__ import annotations

import logging
from pathlib import Path

from edgekd.fileio import sha256_file
from edgekd.models import ModelSpec
from edgekd.pipeline.stages.context import StageContext, StageResult, evaluate, train_and_save
from edgekd.pipeline.training.checkpoint import read_teacher, save_checkpoint, save_program_checkpoint
from edgekd.pipeline.training.losses import CrossEntropy

log = logging.getLogger(__name__)


def train_teacher(ctx: StageContext) -> StageResult:
    if ctx.cfg.teacher.checkpoint:
        return bring_teacher(ctx, Path(ctx.cfg.teacher.checkpoint))
    x, y = ctx.tensors("train")
    return train_and_save(ctx, "teacher", ctx.cfg.teacher, x, y, CrossEntropy())


def bring_teacher(ctx: StageContext, source: Path) -> StageResult:
    """Evaluate a teacher trained elsewhere and keep it as teacher.pt (no training)."""
    t = ctx.cfg.teacher
    spec = ModelSpec(t.arch, ctx.data.in_shape, ctx.data.num_classes, dict(t.kwargs))
    model, kind, spec = read_teacher(source, spec)
    path = ctx.layout.checkpoint("teacher")
    if kind in ("torchscript", "torch.export"):
        save_program_checkpoint(path, kind, source, spec)
    else:
        save_checkpoint(path, model, spec)
    metrics = {**evaluate(ctx, model, spec), "epochs": 0, "train_seconds": 0.0, "source": str(source),
               "source_format": kind, "source_sha256": sha256_file(source)}
    log.info("teacher: brought from %s (%s), test accuracy %.2f%%", source, kind, 100 * metrics["accuracy"])
    return StageResult([path], metrics)
