"""Mixup and CutMix of a training batch (`train.mixup`, `train.cutmix`: the α of Beta(α, α); 0 is off).

Mixup (Zhang et al. 2018) blends every image with a partner from the same batch, x·λ + x[partner]·(1−λ);
CutMix (Yun et al. 2019) pastes a box of the partner into it and sets λ to the share left uncovered.
With both on, each batch takes one of them at even odds. λ is one draw per batch, from the run's
generator, so a run is reproducible and resumes exactly.

The teacher is shown the mixed batch (a mixing config counts as augmented: no logit cache), so its
soft targets describe what the student sees; the label terms follow the mixup paper's criterion,
λ·loss(labels) + (1−λ)·loss(partner's labels), which leaves a term that reads only the teacher as it is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from edgekd.pipeline.config import TrainConfig


@dataclass(frozen=True)
class Mixed:
    """Image i of the batch holds share `lam` of itself and 1 − lam of image partner[i]."""

    partner: Tensor
    lam: float


def _beta(alpha: float, generator: torch.Generator) -> float:
    seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def cut_box(h: int, w: int, lam: float, generator: torch.Generator) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a box of about (1 − lam) of the image, centred uniformly, clipped."""
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = (int(v) for v in torch.randint(0, 1 << 30, (2,), generator=generator))
    cy, cx = cy % h, cx % w
    return max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h), max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)


def mix(x: Tensor, cfg: TrainConfig, generator: torch.Generator) -> tuple[Tensor, Mixed | None]:
    """The batch mixed by mixup or CutMix (or as it is when both are off), and how it was mixed."""
    if not (cfg.mixup or cfg.cutmix) or len(x) < 2:
        return x, None
    use_cutmix = bool(cfg.cutmix) and (not cfg.mixup or bool(torch.rand(1, generator=generator) < 0.5))
    partner = torch.randperm(len(x), generator=generator).to(x.device)
    lam = _beta(cfg.cutmix if use_cutmix else cfg.mixup, generator)
    if not use_cutmix:
        return x * lam + x[partner] * (1 - lam), Mixed(partner, lam)
    h, w = x.shape[-2:]
    top, bottom, left, right = cut_box(h, w, lam, generator)
    out = x.clone()
    out[..., top:bottom, left:right] = x[partner][..., top:bottom, left:right]
    return out, Mixed(partner, 1 - (bottom - top) * (right - left) / (h * w))


def mixed_loss(loss: Callable[[Tensor, Tensor | None, Tensor], Tensor], logits: Tensor, teacher_logits: Tensor | None,
               labels: Tensor, mixed: Mixed | None) -> Tensor:
    """loss(labels), or for a mixed batch λ·loss(labels) + (1−λ)·loss(partner's labels)."""
    value = loss(logits, teacher_logits, labels)
    if mixed is None:
        return value
    return mixed.lam * value + (1 - mixed.lam) * loss(logits, teacher_logits, labels[mixed.partner])
