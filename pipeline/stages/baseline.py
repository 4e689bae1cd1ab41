"""The baseline stage: the student architecture trained on the student's transfer set with hard labels
only, so that the distilled student is judged against the same inputs, epochs and seed."""
from __future__ import annotations

from edgekd.pipeline.stages.context import StageContext, StageResult, train_and_save, transfer_set
from edgekd.pipeline.training.losses import CrossEntropy


def train_baseline(ctx: StageContext) -> StageResult:
    x, y = transfer_set(ctx)
    return train_and_save(ctx, "baseline", ctx.cfg.student, x, y, CrossEntropy())
