"""Hard labels only: what the teacher and the baseline student minimise (and `distill.loss = "ce"`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class CEParams:
    pass  # cross-entropy takes no parameters


class CrossEntropy(nn.Module):
    """Cross-entropy with the hard labels; the teacher's logits are not read."""

    help = "hard labels only (no teacher): the baseline's loss"
    Params = CEParams
    uses_teacher = False

    def __init__(self, params: CEParams = CEParams()):
        super().__init__()
        self.params = params

    def forward(self, student_logits: Tensor, teacher_logits: Tensor | None, labels: Tensor) -> Tensor:
        return F.cross_entropy(student_logits, labels)
