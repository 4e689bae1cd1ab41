"""Hint (feature) distillation, "selective distillation": an L2 loss between a student layer and a
teacher layer, named by module path (FitNets, Romero et al. 2015). The student's features pass
through a learned regressor (a 1x1 convolution, or a linear layer for flat features) that belongs
to the loss, not to the model, so exported files never contain it. Spatial sizes are matched by
average pooling the larger map to the smaller.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.errors import ModelError


def module_at(model: nn.Module, path: str, role: str) -> nn.Module:
    modules = dict(model.named_modules())
    if path not in modules or not path:
        valid = [n for n in modules if n]
        shown = ", ".join(valid[:40]) + (f", ... ({len(valid)} in all)" if len(valid) > 40 else "")
        raise ModelError(f"distill.hints: no {role} module {path!r}; valid module paths: {shown}")
    return modules[path]


def _probe(model: nn.Module, x: Tensor, path: str, role: str) -> torch.Size:
    seen = {}
    handle = module_at(model, path, role).register_forward_hook(lambda m, i, out: seen.setdefault("out", out))
    try:
        with torch.no_grad():
            was = model.training
            model.eval()
            model(x)
            model.train(was)
    finally:
        handle.remove()
    out = seen.get("out")
    if not isinstance(out, Tensor):
        raise ModelError(f"distill.hints: {role} module {path!r} returns no tensor")
    return out.shape


def regressor_for(s_shape: torch.Size, t_shape: torch.Size, student: str, teacher: str) -> nn.Module:
    """The learned map from the student's feature to the teacher's, or ModelError naming both shapes."""
    if len(s_shape) == 4 and len(t_shape) == 4:
        return nn.Conv2d(s_shape[1], t_shape[1], 1)
    if len(s_shape) in (2, 4) and len(t_shape) == 2:  # a map is average pooled to a vector first
        return nn.Linear(s_shape[1], t_shape[1])
    raise ModelError(f"distill.hints: cannot pair student {student!r} (shape {list(s_shape[1:])}) with teacher "
                     f"{teacher!r} (shape {list(t_shape[1:])}); pair feature maps (C, H, W) with feature maps, or "
                     "anything with a flat (C) feature")


def _match(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    if t.dim() == 2 and s.dim() == 4:
        return s.mean(dim=(2, 3)), t
    if s.dim() == 4:
        h, w = min(s.shape[2], t.shape[2]), min(s.shape[3], t.shape[3])
        return F.adaptive_avg_pool2d(s, (h, w)), F.adaptive_avg_pool2d(t, (h, w))
    return s, t


class Hints:
    """The hint terms of a distillation loss: hooks on both models, one regressor per pair."""

    def __init__(self, hints, teacher: nn.Module, sample: Tensor):
        self.hints, self.teacher, self.sample = list(hints), teacher, sample[:2]
        self.regressors = nn.ModuleList()
        self.student_out: dict[int, Tensor] = {}
        self.teacher_out: dict[int, Tensor] = {}
        self.history: list[float] = []  # mean hint loss per epoch (weights applied)

    def attach(self, student: nn.Module) -> list:
        """Probe both models' feature shapes, build the regressors (without touching the global RNG),
        and hook the student; the teacher is hooked for the duration of each teacher pass."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            for h in self.hints:
                s_shape = _probe(student, self.sample, h.student, "student")
                t_shape = _probe(self.teacher, self.sample, h.teacher, "teacher")
                self.regressors.append(regressor_for(s_shape, t_shape, h.student, h.teacher).to(self.sample.device))
        return [module_at(student, h.student, "student").register_forward_hook(
            lambda m, i, out, k=k: self.student_out.__setitem__(k, out)) for k, h in enumerate(self.hints)]

    def teacher_features(self, inputs: Tensor) -> None:
        handles = [module_at(self.teacher, h.teacher, "teacher").register_forward_hook(
            lambda m, i, out, k=k: self.teacher_out.__setitem__(k, out)) for k, h in enumerate(self.hints)]
        try:
            with torch.no_grad():
                self.teacher(inputs)
        finally:
            for handle in handles:
                handle.remove()

    def loss(self) -> Tensor:
        total = 0.0
        for k, h in enumerate(self.hints):
            s, t = _match(self.student_out[k], self.teacher_out[k])
            total = total + h.weight * F.mse_loss(self.regressors[k](s), t)
        return total
