"""Labels-only training: the teacher, and the baseline student the distilled one is judged against."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from edgekd.pipeline.distill import transfer_set
from edgekd.pipeline.stage import StageContext, StageResult, train_and_save


def train_teacher(ctx: StageContext) -> StageResult:
    """Train the teacher on the train split with cross-entropy; write `teacher.pt`."""
    x, y = ctx.tensors("train")
    return train_and_save(ctx, "teacher", ctx.cfg.teacher, x, y, lambda logits, _, idx: F.cross_entropy(logits, y[idx]))


def train_baseline(ctx: StageContext) -> StageResult:
    """Train the student architecture on the student's transfer set with hard labels only; write `baseline.pt`."""
    x, y = transfer_set(ctx)

    def loss_fn(logits: Tensor, _: Tensor, idx: Tensor) -> Tensor:
        return F.cross_entropy(logits, y[idx])
    return train_and_save(ctx, "baseline", ctx.cfg.student, x, y, loss_fn)
