"""Hint (feature) distillation, "selective distillation": an L2 loss between a student layer and a
teacher layer, named by module path (FitNets, Romero et al. 2015). The student's features pass
through a learned regressor (a 1x1 convolution, or a linear layer for flat features) that belongs
to the loss, not to the model, so exported files never contain it. Spatial sizes are matched by
average pooling the larger map to the smaller.

The training loop taps the student (`Tap`), the teacher signal taps the teacher, and `HintLoss` is a
pure function of the two lists of features.
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


class Tap:
    """The latest output of each named module of one model, kept by forward hooks until `remove`."""

    def __init__(self, model: nn.Module, paths: list[str], role: str):
        self.outputs: list[Tensor | None] = [None] * len(paths)
        self._handles = [module_at(model, path, role).register_forward_hook(
            lambda m, i, out, k=k: self.outputs.__setitem__(k, out)) for k, path in enumerate(paths)]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class HintLoss(nn.Module):
    """The hint terms: Σ weight·MSE(regressor(student feature), teacher feature) over the pairs."""

    def __init__(self, pairs, regressors: nn.ModuleList):
        super().__init__()
        self.pairs, self.regressors = list(pairs), regressors

    def forward(self, student_features: list[Tensor], teacher_features: list[Tensor]) -> Tensor:
        total = 0.0
        for k, h in enumerate(self.pairs):
            s, t = _match(student_features[k], teacher_features[k])
            total = total + h.weight * F.mse_loss(self.regressors[k](s), t)
        return total

    def facts(self, loss_by_epoch: list[float]) -> dict:
        return {"pairs": [vars(h) for h in self.pairs], "loss_by_epoch": loss_by_epoch,
                "regressor_params": sum(p.numel() for p in self.regressors.parameters())}


def build_hints(pairs, student: nn.Module, teacher: nn.Module, sample: Tensor) -> HintLoss:
    """Probe both models' feature shapes on `sample` and build one regressor per pair, without touching
    the global RNG; ModelError names a module path that does not exist or shapes that cannot pair."""
    regressors = nn.ModuleList()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for h in pairs:
            s_shape = _probe(student, sample, h.student, "student")
            t_shape = _probe(teacher, sample, h.teacher, "teacher")
            regressors.append(regressor_for(s_shape, t_shape, h.student, h.teacher).to(sample.device))
    return HintLoss(pairs, regressors)
