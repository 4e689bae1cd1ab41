"""What every training stage receives and returns, and the model-training steps they share."""
from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from edgekd.models import ModelSpec, build_model, count_macs, count_params
from edgekd.pipeline.checkpoint import save_checkpoint
from edgekd.pipeline.config import ModelConfig, PipelineConfig
from edgekd.pipeline.data import Dataset
from edgekd.pipeline.progress import SilentProgress, TrainProgress
from edgekd.pipeline.train import FitResult, LossFn, accuracy, fit

log = logging.getLogger(__name__)


@dataclass
class StageContext:
    cfg: PipelineConfig
    data: Dataset
    run_dir: Path
    device: torch.device
    progress: Callable[[str], TrainProgress] = lambda label: SilentProgress()

    def tensors(self, split: str) -> tuple[Tensor, Tensor]:
        x, y = getattr(self.data, f"x_{split}"), getattr(self.data, f"y_{split}")
        return torch.from_numpy(x).to(self.device), torch.from_numpy(y).to(self.device)


@dataclass
class StageResult:
    outputs: list[Path]
    metrics: dict = field(default_factory=dict)


def new_model(ctx: StageContext, model_cfg: ModelConfig) -> tuple[nn.Module, ModelSpec]:
    """Build a freshly seeded model: the same seed gives the same initial weights in every stage."""
    spec = ModelSpec(model_cfg.arch, ctx.data.in_shape, ctx.data.num_classes, dict(model_cfg.kwargs))
    torch.manual_seed(ctx.cfg.run.seed)
    return build_model(spec).to(ctx.device), spec


def train_and_save(ctx: StageContext, name: str, model_cfg: ModelConfig, x: Tensor, y: Tensor,
                   loss_fn: LossFn) -> StageResult:
    """Train, evaluate on the test split, and write `<name>.pt`; return its metrics."""
    model, spec = new_model(ctx, model_cfg)
    x_val, y_val = ctx.tensors("val")
    start = time.perf_counter()
    result: FitResult = fit(model, x, y, loss_fn, x_val, y_val, model_cfg.train, ctx.cfg.run.seed, ctx.progress(name))
    train_seconds = time.perf_counter() - start
    x_test, y_test = ctx.tensors("test")
    metrics = {
        "arch": spec.arch, "kwargs": spec.kwargs,
        "params": count_params(model), "macs": count_macs(model.cpu(), spec.in_shape),
        "accuracy": accuracy(model.to(ctx.device), x_test, y_test),
        "val_accuracy": result.val_accuracy, "epochs": result.epochs, "best_epoch": result.best_epoch,
        "train_samples": len(x), "train_seconds": round(train_seconds, 3),
        "epoch_seconds_median": round(statistics.median(result.epoch_seconds), 4),
        "device": str(ctx.device),
    }
    path = ctx.run_dir / f"{name}.pt"
    save_checkpoint(path, model.cpu(), spec, metrics)
    log.info("%s: test accuracy %.2f%% after %d epochs (%.1f s)", name, 100 * metrics["accuracy"],
             result.epochs, train_seconds)
    return StageResult([path], metrics)
