"""What the training stages minimise: a literal registry of losses, and the distillation loss itself.

Knowledge distillation (Hinton, Vinyals & Dean, 2015): the student learns from the teacher's soft
targets at temperature T, scaled by T² so their gradients keep the same magnitude as T changes,
mixed with the ordinary hard-label loss:

    loss = α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1−α)·CE(z_s, y)

with KL averaged over the batch (`batchmean`), not over every class entry (`mean`).

A loss may bring trainable modules of its own (`modules`, trained alongside the model and dropped
afterwards) and forward hooks on the model (`attach`), so feature losses fit without touching `fit`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.pipeline.training.hints import Hints

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


class Loss:
    """Called as loss(logits, inputs_as_the_model_saw_them, sample_indices) -> scalar."""

    def modules(self) -> list[nn.Module]:
        """Extra trainable modules (trained with the model, never exported)."""
        return []

    def attach(self, model: nn.Module) -> list:
        """Register forward hooks on the model being trained; return their handles."""
        return []

    def __call__(self, logits: Tensor, inputs: Tensor, idx: Tensor) -> Tensor:
        raise NotImplementedError

    def metrics(self) -> dict:
        """Facts worth recording beside the trained model."""
        return {}


class CrossEntropy(Loss):
    """Hard labels only: the teacher and the baseline student."""

    def __init__(self, labels: Tensor):
        self.labels = labels

    def __call__(self, logits: Tensor, inputs: Tensor, idx: Tensor) -> Tensor:
        return F.cross_entropy(logits, self.labels[idx])


class Distillation(Loss):
    """Soft targets of a teacher plus hard labels. Without on-the-fly augmentation the teacher's
    soft targets are computed once for the whole transfer set, so an epoch costs what a baseline
    epoch costs; with it the teacher sees every augmented batch."""

    def __init__(self, teacher: nn.Module, x: Tensor, labels: Tensor, temperature: float, alpha: float,
                 augmented: bool, hints: tuple = (), batch_size: int = 1024, dist=None):
        self.teacher, self.labels, self.t, self.alpha = teacher.eval(), labels, temperature, alpha
        self.cached = None
        self.cache_seconds = 0.0
        self.hints = Hints(hints, self.teacher, x) if hints else None
        self.epoch_size, self._seen, self._hint_sum = len(x), 0, 0.0
        if not augmented:
            start = time.perf_counter()
            starts = list(range(0, len(x), batch_size))
            mine = starts[dist.rank::dist.world] if dist else starts  # under DDP each rank computes a share once
            with torch.no_grad():
                chunks = {i: teacher(x[i:i + batch_size]).cpu() for i in mine}
            if dist:
                chunks = {i: t for part in dist.gather(chunks) for i, t in part.items()}
            # the same batches as one process computes: every rank holds the same values it would
            logits = torch.cat([chunks[i] for i in starts]).to(x.device)
            self.cached = F.log_softmax(logits / temperature, dim=1)
            self.cache_seconds = time.perf_counter() - start
            log.info("cached teacher soft targets for %d transfer samples in %.2f s", len(x), self.cache_seconds)

    def modules(self) -> list[nn.Module]:
        return [self.hints.regressors] if self.hints else []

    def attach(self, model: nn.Module) -> list:
        return self.hints.attach(model) if self.hints else []

    def __call__(self, logits: Tensor, inputs: Tensor, idx: Tensor) -> Tensor:
        if self.cached is not None:
            loss = kd_loss_from_log_probs(logits, self.cached[idx], self.labels[idx], self.t, self.alpha)
        else:
            with torch.no_grad():
                target = self.teacher(inputs)
            loss = kd_loss(logits, target, self.labels[idx], self.t, self.alpha)
        if self.hints is None:
            return loss
        self.hints.teacher_features(inputs)
        hint = self.hints.loss()
        self._track(float(hint.detach()), len(idx))
        return loss + hint

    def _track(self, hint: float, n: int) -> None:
        """The hint loss averaged over each epoch (an epoch is one pass over the transfer set)."""
        self._hint_sum += hint * n
        self._seen += n
        if self._seen >= self.epoch_size:
            self.hints.history.append(round(self._hint_sum / self._seen, 6))
            self._seen, self._hint_sum = 0, 0.0

    def metrics(self) -> dict:
        out = {"temperature": self.t, "alpha": self.alpha, "teacher_logits_cached": self.cached is not None,
               "teacher_cache_seconds": round(self.cache_seconds, 3)}
        if self.hints:
            out["hints"] = {"pairs": [vars(h) for h in self.hints.hints], "loss_by_epoch": self.hints.history,
                            "regressor_params": sum(p.numel() for p in self.hints.regressors.parameters())}
        return out


@dataclass(frozen=True)
class LossInputs:
    """Everything a loss may be built from; each builder takes what it needs."""

    x: Tensor
    labels: Tensor
    teacher: nn.Module | None
    temperature: float
    alpha: float
    augmented: bool  # inputs change every epoch (on-the-fly jitter)
    hints: tuple = ()  # HintConfig pairs
    dist: object = None  # the process group under torchrun


LOSSES: dict[str, Callable[[LossInputs], Loss]] = {
    "ce": lambda i: CrossEntropy(i.labels),
    "kd": lambda i: Distillation(i.teacher, i.x, i.labels, i.temperature, i.alpha, i.augmented, i.hints, dist=i.dist),
}


def make_loss(name: str, inputs: LossInputs) -> Loss:
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    return LOSSES[name](inputs)
