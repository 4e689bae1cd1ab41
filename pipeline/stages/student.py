"""The student stage: distil teacher.pt into the student architecture (loss `distill.loss`); write student.pt."""
from __future__ import annotations

from edgekd.pipeline.stages.context import StageContext, StageResult, train_and_save, transfer_set
from edgekd.pipeline.training.checkpoint import load_checkpoint
from edgekd.pipeline.training.losses import LossInputs, make_loss


def train_student(ctx: StageContext) -> StageResult:
    cfg = ctx.cfg
    teacher, _ = load_checkpoint(ctx.layout.checkpoint("teacher"))
    x, y = transfer_set(ctx)
    inputs = LossInputs(x, y, teacher.to(ctx.device).eval(), cfg.distill.temperature, cfg.distill.alpha,
                        augmented=bool(cfg.student.train.jitter))
    return train_and_save(ctx, "student", cfg.student, x, y, make_loss(cfg.distill.loss, inputs))
