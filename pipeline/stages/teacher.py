"""The teacher stage: train the teacher on the train split with hard labels; write teacher.pt."""
from __future__ import annotations

from edgekd.pipeline.stages.context import StageContext, StageResult, train_and_save
from edgekd.pipeline.training.losses import LossInputs, make_loss


def train_teacher(ctx: StageContext) -> StageResult:
    x, y = ctx.tensors("train")
    loss = make_loss("ce", LossInputs(x, y, None, 1.0, 0.0, augmented=bool(ctx.cfg.teacher.train.jitter)))
    return train_and_save(ctx, "teacher", ctx.cfg.teacher, x, y, loss)
