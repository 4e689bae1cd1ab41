"""The student stage: distil teacher.pt into the student architecture (loss `distill.loss`); write student.pt.

The training loop reads the teacher through a TeacherSignal (cached logits, or a pass per augmented
batch, and hint features); the loss itself never sees the teacher.

When the transfer set lacks classes, the output biases of those classes are raised afterwards by the
amount that maximises validation accuracy (`distill.bias_correction`), and the corrected biases are
what student.pt and every exported file carry.
"""
from __future__ import annotations

from torch import nn

from edgekd.pipeline.stages.context import StageContext, StageResult, train_and_save, transfer_classes, transfer_set
from edgekd.pipeline.training import bias
from edgekd.pipeline.training.fit import predict
from edgekd.pipeline.training.losses import make_loss
from edgekd.pipeline.training.teacher_signal import TeacherSignal


def train_student(ctx: StageContext) -> StageResult:
    cfg = ctx.cfg
    x, y = transfer_set(ctx)
    loss = make_loss(cfg.distill)
    teacher = None
    if loss.uses_teacher:
        teacher = TeacherSignal(ctx.load_checkpoint("teacher").to(ctx.device), x,
                                augmented=cfg.student.train.augmented, hints=cfg.distill.hints, dist=ctx.dist)
    missing = [c for c in range(ctx.data.num_classes) if c not in transfer_classes(ctx)]

    def finish(model: nn.Module) -> dict:
        facts = {"transfer_classes": transfer_classes(ctx)} if missing else {}
        if missing and cfg.distill.bias_correction == "auto" and ctx.leader:
            facts |= bias.correct(model, missing, ctx.tensors("val"), ctx.tensors("test"), ctx.data.num_classes, predict)
        return facts
    return train_and_save(ctx, "student", cfg.student, x, y, loss, finish, teacher)
