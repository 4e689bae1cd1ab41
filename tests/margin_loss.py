"""A throwaway loss for tests/test_loss_table.py: everything a new loss with a parameter needs is this
one module and one row in LOSSES (which the test adds with monkeypatch)."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class MarginParams:
    temperature: float  # distill.temperature
    margin: float = 1.0  # distill.loss_options.margin: the weight of the hard-label term

    def __post_init__(self):
        if self.margin < 0:
            raise ValueError(f"margin = {self.margin}: must be >= 0")


class MarginLoss(nn.Module):
    """Soft cross-entropy with the teacher at temperature T, plus `margin` times the hard-label loss."""

    help = "soft cross-entropy at T plus margin x hard labels (a test loss)"
    Params = MarginParams
    uses_teacher = True

    def __init__(self, params: MarginParams):
        super().__init__()
        self.params = params

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        t = self.params.temperature
        soft = -(F.softmax(teacher_logits / t, dim=1) * F.log_softmax(student_logits / t, dim=1)).sum(1).mean()
        return soft + self.params.margin * F.cross_entropy(student_logits, labels)
