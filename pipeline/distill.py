"""Knowledge distillation (Hinton, Vinyals & Dean, 2015): the loss, the transfer set, the student stage.

The student learns from the teacher's soft targets at temperature T, scaled by T² so their gradients
keep the same magnitude as T changes, mixed with the ordinary hard-label loss:

    loss = α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1−α)·CE(z_s, y)

with KL averaged over the batch (`batchmean`), not over every class entry (`mean`).
"""
from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from edgekd.pipeline.checkpoint import load_checkpoint
from edgekd.pipeline.stage import StageContext, StageResult, train_and_save
from edgekd.pipeline.train import jitter, predict

log = logging.getLogger(__name__)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float, alpha: float) -> Tensor:
    """The distillation loss above, as a scalar averaged over the batch."""
    teacher_log_probs = F.log_softmax(teacher_logits / temperature, dim=1)
    return kd_loss_from_log_probs(student_logits, teacher_log_probs, labels, temperature, alpha)


def kd_loss_from_log_probs(student_logits: Tensor, teacher_log_probs: Tensor, labels: Tensor,
                           temperature: float, alpha: float) -> Tensor:
    """`kd_loss` with the teacher's soft targets given as log-probabilities at `temperature` (cacheable)."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), teacher_log_probs,
                    reduction="batchmean", log_target=True) * (t * t)
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft + (1.0 - alpha) * hard


def transfer_set(ctx: StageContext) -> tuple[Tensor, Tensor]:
    """The train split plus `distill.transfer_copies` jittered copies of it (same for every seed-equal run).

    The baseline trains on the same inputs with hard labels, so the only difference between baseline
    and distilled student is the loss.
    """
    x, y = ctx.tensors("train")
    d = ctx.cfg.distill
    if d.transfer_copies == 0:
        return x, y
    gen = torch.Generator().manual_seed(ctx.cfg.run.seed + 1)
    copies = [jitter(x, d.transfer_jitter, gen) for _ in range(d.transfer_copies)]
    return torch.cat([x, *copies]), y.repeat(d.transfer_copies + 1)


def train_student(ctx: StageContext) -> StageResult:
    """Distil `teacher.pt` into the student architecture; write `student.pt`."""
    cfg = ctx.cfg
    teacher, _ = load_checkpoint(ctx.run_dir / "teacher.pt")
    teacher = teacher.to(ctx.device).eval()
    x, y = transfer_set(ctx)
    temperature, alpha = cfg.distill.temperature, cfg.distill.alpha
    if cfg.student.train.jitter:
        # inputs change every epoch, so the teacher must see each augmented batch
        def loss_fn(logits: Tensor, seen: Tensor, idx: Tensor) -> Tensor:
            with torch.no_grad():
                target = teacher(seen)
            return kd_loss(logits, target, y[idx], temperature, alpha)
        cache_seconds = 0.0
    else:
        start = time.perf_counter()
        cached = F.log_softmax(predict(teacher, x) / temperature, dim=1)
        cache_seconds = time.perf_counter() - start
        log.info("cached teacher soft targets for %d transfer samples in %.2f s", len(x), cache_seconds)

        def loss_fn(logits: Tensor, seen: Tensor, idx: Tensor) -> Tensor:
            return kd_loss_from_log_probs(logits, cached[idx], y[idx], temperature, alpha)
    result = train_and_save(ctx, "student", cfg.student, x, y, loss_fn)
    result.metrics.update({"temperature": temperature, "alpha": alpha, "teacher_logits_cached": not cfg.student.train.jitter,
                           "teacher_cache_seconds": round(cache_seconds, 3)})
    return result
