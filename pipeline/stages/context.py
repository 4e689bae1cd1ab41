"""What every stage receives (its paths, config, data, device) and returns, and the training steps the
three training stages share."""
from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from edgekd.models import ModelSpec, build_model, count_macs, count_params
from edgekd.pipeline.config import ModelConfig, PipelineConfig
from edgekd.pipeline.data import Dataset
from edgekd.pipeline.data.images import streams
from edgekd.pipeline.layout import RunLayout
from edgekd.pipeline.progress import SilentProgress, TrainProgress
from edgekd.pipeline.training.batches import Streamed
from edgekd.pipeline.training.checkpoint import load_checkpoint, save_checkpoint
from edgekd.pipeline.training.fit import FitResult, NonFiniteTraining, Resume, fit, jitter, predict
from edgekd.pipeline.training.teacher_signal import TeacherSignal

log = logging.getLogger(__name__)


@dataclass
class StageContext:
    cfg: PipelineConfig
    layout: RunLayout
    device: torch.device
    load_data: Callable[[], Dataset]
    progress: Callable[[str], TrainProgress] = lambda label: SilentProgress()
    resume_key: str = ""  # the running stage's config and input hashes; per-epoch state must match it
    dist: object = None  # under torchrun: the process group (pipeline.distributed.Distributed)
    received: dict = field(default_factory=dict)  # on a follower rank: what rank 0 broadcast for this stage
    _data: Dataset | None = field(default=None, repr=False)

    @property
    def leader(self) -> bool:
        """Whether this process reads and writes the run directory (always, without torchrun)."""
        return self.dist is None or self.dist.leader

    def load_checkpoint(self, model: str) -> nn.Module:
        """A checkpoint of this run: from disk on rank 0, from rank 0's broadcast elsewhere."""
        from edgekd.pipeline.distributed import load_model_bytes

        if self.leader:
            return load_checkpoint(self.layout.checkpoint(model))[0]
        return load_model_bytes(self.received[model])

    @property
    def data(self) -> Dataset:
        """The prepared dataset, loaded on first use (benchmarking and reporting never need it)."""
        if self._data is None:
            self._data = self.load_data()
        return self._data

    @property
    def streaming(self) -> bool:
        """Whether training reads the splits batch by batch (data.stream; "auto": when they are large)."""
        return streams(self.cfg.data.stream, self.data.float_bytes)

    def tensors(self, split: str) -> tuple[Tensor | Streamed, Tensor]:
        """A split's images (one tensor, or a Streamed view when streaming) and labels, on the device."""
        x, y = getattr(self.data, f"x_{split}"), torch.from_numpy(getattr(self.data, f"y_{split}")).to(self.device)
        return (Streamed(x, self.device) if self.streaming else torch.from_numpy(np.asarray(x)).to(self.device)), y


@dataclass
class StageResult:
    outputs: list[Path]
    metrics: dict = field(default_factory=dict)


def transfer_classes(ctx: StageContext) -> list[int]:
    """The classes the transfer set holds (all, unless distill.transfer omits some or keeps only some)."""
    t, classes = ctx.cfg.distill.transfer, range(ctx.data.num_classes)
    if t.only_classes:
        return [c for c in classes if c in t.only_classes]
    return [c for c in classes if c not in t.omit_classes]


def transfer_set(ctx: StageContext) -> tuple[Tensor | Streamed, Tensor]:
    """The train split (of the transfer classes) plus `distill.transfer_copies` jittered copies of it
    (the same for every seed-equal run).

    The baseline trains on the same inputs with hard labels, so the only difference between baseline
    and distilled student is the loss.
    """
    x, y = ctx.tensors("train")
    keep = transfer_classes(ctx)
    if len(keep) < ctx.data.num_classes:
        mask = torch.isin(y, torch.tensor(keep, device=y.device))
        x, y = (x.select(mask) if isinstance(x, Streamed) else x[mask]), y[mask]
    d = ctx.cfg.distill
    if d.transfer_copies == 0:
        return x, y
    gen = torch.Generator().manual_seed(ctx.cfg.run.seed + 1)
    if isinstance(x, Streamed):
        return x.with_copies(d.transfer_copies, d.transfer_jitter, gen), y.repeat(d.transfer_copies + 1)
    copies = [jitter(x, d.transfer_jitter, gen) for _ in range(d.transfer_copies)]
    return torch.cat([x, *copies]), y.repeat(d.transfer_copies + 1)


def training_seed(ctx: StageContext, model_cfg: ModelConfig) -> int:
    return model_cfg.train.seed if model_cfg.train.seed >= 0 else ctx.cfg.run.seed


def new_model(ctx: StageContext, model_cfg: ModelConfig) -> tuple[nn.Module, ModelSpec]:
    """Build a freshly seeded model: the same seed gives the same initial weights in every stage."""
    spec = ModelSpec(model_cfg.arch, ctx.data.in_shape, ctx.data.num_classes, dict(model_cfg.kwargs))
    torch.manual_seed(training_seed(ctx, model_cfg))
    return build_model(spec).to(ctx.device), spec


def evaluate(ctx: StageContext, model: nn.Module, spec: ModelSpec) -> dict:
    """The facts every trained (or brought) model records: size, cost, test accuracy."""
    x_test, y_test = ctx.tensors("test")
    logits = predict(model.to(ctx.device), x_test)
    if not bool(torch.isfinite(logits).all()):
        raise NonFiniteTraining(f"{spec.arch!r}: its outputs on the test split are NaN or infinite; nothing was "
                                "written for this model. Check its forward() on a batch of real inputs")
    acc = (logits.argmax(1) == y_test).float().mean().item()
    return {"arch": spec.arch, "kwargs": spec.kwargs, "params": count_params(model),
            "macs": count_macs(model.cpu(), spec.in_shape), "accuracy": acc,
            "n_test": len(y_test), "device": str(ctx.device)}


def train_and_save(ctx: StageContext, name: str, model_cfg: ModelConfig, x: Tensor, y: Tensor, loss: nn.Module,
                   finish: Callable[[nn.Module], dict] | None = None,
                   teacher: TeacherSignal | None = None) -> StageResult:
    """Train on `loss` (reading `teacher` when it distils; resuming an interrupted run of the same stage),
    run `finish` on the trained model (it may change it and returns metrics), evaluate on the test
    split, write `<name>.pt`."""
    model, spec = new_model(ctx, model_cfg)
    x_val, y_val = ctx.tensors("val")
    resume = Resume(ctx.layout.resume_file(name), ctx.resume_key)
    start = time.perf_counter()
    try:
        result: FitResult = fit(model, x=x, y=y, loss=loss, teacher=teacher, x_val=x_val, y_val=y_val,
                                cfg=model_cfg.train, seed=training_seed(ctx, model_cfg), progress=ctx.progress(name),
                                resume=resume, dist=ctx.dist, amp=ctx.cfg.run.amp)
    except NonFiniteTraining as exc:
        role = "teacher" if name == "teacher" else "student"
        raise NonFiniteTraining(f"{name} ({role}.arch = {model_cfg.arch!r}): {exc}") from None
    train_seconds = time.perf_counter() - start
    if not ctx.leader:
        return StageResult([])  # a follower trained its share; rank 0 evaluates and writes
    extra = finish(model) if finish else {}
    metrics = {**evaluate(ctx, model, spec), **extra, "processes": ctx.dist.world if ctx.dist else 1,
               "val_accuracy": result.val_accuracy, "epochs": result.epochs,
               # the best epoch's val accuracy is a maximum over noisy epochs; the last one's is not
               "val_accuracy_last": result.history[-1]["val_accuracy"] if result.history else None,
               "best_epoch": result.best_epoch, "resumed_from_epoch": result.resumed_from, "train_samples": len(x),
               "train_seconds": round(train_seconds, 3),
               "epoch_seconds_median": round(statistics.median(result.epoch_seconds), 4), **result.facts}
    path = ctx.layout.checkpoint(name)
    save_checkpoint(path, model.cpu(), spec)
    resume.path.unlink(missing_ok=True)
    log.info("%s: test accuracy %.2f%% after %d epochs (%.1f s)", name, 100 * metrics["accuracy"],
             result.epochs, train_seconds)
    return StageResult([path], metrics)
