"""Quantization-aware distillation: fine-tune a trained model with int8 fake quantization in the loop
while an fp32 model supervises it, so its int8 files keep the accuracy of its fp32 file.

The student is supervised by the teacher through the student stage's own loss (`distill`); the
teacher and the baseline by their own fp32 copy (soft targets only, at `distill.temperature`): the
baseline stays teacher-free. Training is the loop every stage uses (`fit`): same batches, jitter,
per-epoch resume state, best epoch on the validation split (here, of the fake-quantized model).

The trained QAT model is cached under `qat/<model>.pt` with the hash of everything it depends on,
so both int8 formats, and every later run with the same inputs, reuse one training.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgekd import __version__
from edgekd.export import qat
from edgekd.fileio import sha256_json, write_bytes
from edgekd.pipeline.config import DistillConfig, ModelConfig, PipelineConfig, TrainConfig
from edgekd.pipeline.training.fit import Resume, fit
from edgekd.pipeline.training.losses import make_loss
from edgekd.pipeline.training.teacher_signal import TeacherSignal

log = logging.getLogger(__name__)


@dataclass
class QatResult:
    net: qat.QatNet
    facts: dict  # epochs, best epoch, fake-quantized val accuracy, train seconds, supervisor, whether reused


@dataclass(frozen=True)
class QatInputs:
    """What one QAT training depends on: it is retrained when any of it changes."""

    model: str  # "teacher", "baseline", "student"
    checkpoint_sha: str
    supervisor_sha: str  # the teacher's checkpoint for the student; the model's own otherwise
    layout: str  # the int8 TFLite file's input layout (the QAT graph's)
    seed: int

    def key(self, cfg: PipelineConfig) -> str:
        return sha256_json({**dataclasses.asdict(self), "edgekd": __version__, "train": _train_config(cfg, self.model).__dict__,
                            "loss": dataclasses.asdict(_loss_config(cfg, self.model))})


def supervisor(model: str) -> str:
    """Which checkpoint supervises `model`'s quantization-aware training."""
    return "teacher" if model == "student" else model


def _model_config(cfg: PipelineConfig, model: str) -> ModelConfig:
    return {"teacher": cfg.teacher, "baseline": cfg.student, "student": cfg.student}[model]


def _train_config(cfg: PipelineConfig, model: str) -> TrainConfig:
    """The model's own batch size and jitter; QAT's epochs and learning rate; no early stop."""
    own, q = _model_config(cfg, model).train, cfg.export.qat
    return dataclasses.replace(own, epochs=q.epochs, lr=q.lr, weight_decay=0.0, patience=0, schedule="cosine")


def _loss_config(cfg: PipelineConfig, model: str) -> DistillConfig:
    if model == "student":
        return cfg.distill
    return DistillConfig(loss="kd", temperature=cfg.distill.temperature, alpha=1.0)  # match its own fp32 outputs


def load_cached(path: Path, key: str, net: qat.QatNet) -> dict | None:
    """The facts of a cached QAT training with this key, its weights loaded into `net`; None otherwise."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a missing or unreadable cache means train again
        return None
    if blob.get("key") != key:
        return None
    net.load_state_dict(blob["state_dict"])
    return {**blob["facts"], "reused": True}


def train_qat(cfg: PipelineConfig, inputs: QatInputs, *, model: nn.Module, supervisor_model: nn.Module,
              sample: torch.Tensor, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
              cache: Path, resume: Path) -> QatResult:
    """The QAT model of `model` (fp32, eval mode): from `cache` when its inputs are unchanged, else trained
    on `train` (the transfer set), its best epoch chosen on `val`, and written to `cache`."""
    key = inputs.key(cfg)
    net = qat.build(model, sample, inputs.layout)
    facts = load_cached(cache, key, net)
    if facts is not None:
        log.info("qat %s: unchanged inputs, trained model reused (%s)", inputs.model, cache.name)
        return QatResult(net.eval(), facts)
    x, y = train
    train_cfg = _train_config(cfg, inputs.model)
    signal = TeacherSignal(supervisor_model.eval(), x, augmented=train_cfg.augmented)
    start = time.perf_counter()
    log.info("qat %s: %d epochs of quantization-aware training, supervised by %s", inputs.model, train_cfg.epochs,
             supervisor(inputs.model))
    result = fit(net, x=x, y=y, loss=make_loss(_loss_config(cfg, inputs.model)), teacher=signal, x_val=val[0],
                 y_val=val[1], cfg=train_cfg, seed=inputs.seed, resume=Resume(resume, key))
    facts = {"epochs": result.epochs, "best_epoch": result.best_epoch, "val_accuracy": result.val_accuracy,
             "train_seconds": round(time.perf_counter() - start, 2), "supervisor": supervisor(inputs.model),
             "resumed_from": result.resumed_from}
    buf = io.BytesIO()
    torch.save({"key": key, "state_dict": net.state_dict(), "facts": facts}, buf)
    write_bytes(cache, buf.getvalue())
    resume.unlink(missing_ok=True)
    return QatResult(net.eval(), {**facts, "reused": False})
