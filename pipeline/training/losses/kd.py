"""Knowledge distillation (Hinton, Vinyals & Dean, 2015): the student learns from the teacher's soft
targets at temperature T, scaled by T² so their gradients keep the same magnitude as T changes,
mixed with the ordinary hard-label loss:

    loss = α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1−α)·CE(z_s, y)

with KL averaged over the batch (`batchmean`), not over every class entry (`mean`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float, alpha: float) -> Tensor:
    """The distillation loss above, as a scalar averaged over the batch."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft + (1.0 - alpha) * hard


@dataclass(frozen=True)
class KDParams:
    temperature: float  # distill.temperature (its default lives in the config schema)
    alpha: float  # distill.alpha: the weight of the soft term; 1 - alpha weighs the hard labels


class KnowledgeDistillation(nn.Module):
    """The loss above, on one batch; the teacher's logits come from the training loop."""

    help = "Hinton KD: the teacher's soft targets at temperature T (T²-scaled KL), mixed with hard labels by alpha"
    Params = KDParams
    uses_teacher = True

    def __init__(self, params: KDParams):
        super().__init__()
        self.params = params

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        return kd_loss(student_logits, teacher_logits, labels, self.params.temperature, self.params.alpha)
