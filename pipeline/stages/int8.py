"""How each int8 file is made (`export.int8_method`), for the export stage.

- "ptq": post-training calibration only.
- "qat": the file is written from a quantization-aware trained copy of the model (pipeline.training.qat).
- "auto": PTQ first; when its drop on the validation split is not within `export.max_int8_drop` (a fail
  or a "cannot tell" of the paired rule), QAT too, and the file with more validation samples right is
  kept (PTQ on a tie). A PTQ file that passes costs no training.

The choice is made on the validation split; the test split (the eval set) only reports the kept file,
as for every other file. Each attempt's numbers (test and validation accuracy, drop, seconds) go to
the sidecar under `quantization`.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from edgekd.export.common import fold_batchnorm, reference_logits
from edgekd.export.driver import export_model
from edgekd.export.formats import FORMATS, ExportOptions, ExportResult
from edgekd.export.parity import Parity, compare, int8_drop_check
from edgekd.fileio import sha256_file
from edgekd.pipeline.stages.context import StageContext, transfer_set
from edgekd.pipeline.training import qat

log = logging.getLogger(__name__)


@dataclass
class Attempt:
    method: str  # "ptq" | "qat"
    result: ExportResult  # parity on the eval set (test split)
    val: Parity  # the same file against the fp32 model on the validation split
    train_seconds: float = 0.0  # QAT training this attempt paid for (0 when PTQ, or reused)

    def to_dict(self, max_drop: float) -> dict:
        check = int8_drop_check(self.val, max_drop)
        return {"method": self.method, "accuracy": self.result.parity.accuracy,
                "reference_accuracy": self.result.parity.reference_accuracy,
                "drop": self.result.parity.reference_accuracy - self.result.parity.accuracy,
                "val_accuracy": self.val.accuracy, "val_reference_accuracy": self.val.reference_accuracy,
                "val_verdict": check.verdict, "export_seconds": round(self.result.seconds, 2),
                "train_seconds": round(self.train_seconds, 2)}


@dataclass
class Int8Maker:
    """Makes the int8 files of one export stage; a model's QAT copy is trained once for all its formats."""

    ctx: StageContext
    _val: tuple[np.ndarray, np.ndarray] | None = None
    _qat: dict[str, qat.QatResult] = field(default_factory=dict)

    def method(self, model_name: str) -> str:
        e = self.ctx.cfg.export
        return e.int8_method if model_name in e.qat.models else "ptq"

    def qat_key_inputs(self, model_name: str) -> dict:
        """What a QAT-made file depends on beyond the PTQ one (part of its cache key)."""
        if self.method(model_name) == "ptq":
            return {"int8_method": "ptq"}
        return {"int8_method": self.method(model_name), "qat": self._qat_inputs(model_name).key(self.ctx.cfg),
                "val_fraction": self.ctx.cfg.data.val_fraction}

    def make(self, model_name: str, fmt: str, model: nn.Module, sample: torch.Tensor,
             options: ExportOptions) -> tuple[ExportResult, dict]:
        """Write `model`'s file of int8 format `fmt`; the result and the sidecar's `quantization` entry."""
        layout, method, max_drop = self.ctx.layout, self.method(model_name), self.ctx.cfg.export.max_int8_drop
        path = layout.export_file(model_name, fmt)
        attempts: list[Attempt] = []
        if method != "qat":
            attempts.append(self._judged("ptq", fmt, model, options, export_model(fmt, model, sample, path, options)))
            verdict = int8_drop_check(attempts[0].val, max_drop).verdict
            if method == "ptq" or verdict == "pass":
                return attempts[0].result, self._entry(method, attempts[0], attempts)
            log.info("%s: PTQ on the validation split: %s; trying quantization-aware training", path.name,
                     int8_drop_check(attempts[0].val, max_drop).describe())
        trained, seconds = self._qat_model(model_name, model, sample)
        candidate = layout.qat_candidate(path)
        candidate.parent.mkdir(parents=True, exist_ok=True)
        result = export_model(fmt, model, sample, candidate, options, qat_net=trained.net)
        attempts.append(self._judged("qat", fmt, model, options, result, seconds))
        best = max(attempts, key=lambda a: a.val.accuracy)  # max keeps the first of equals: PTQ
        if best.method == "qat":
            os.replace(candidate, path)
            best.result.path = path
        else:
            candidate.unlink(missing_ok=True)
        return best.result, self._entry(method, best, attempts)

    def _entry(self, method: str, chosen: Attempt, attempts: list[Attempt]) -> dict:
        max_drop = self.ctx.cfg.export.max_int8_drop
        return {"int8_method": chosen.method, "setting": method, "decided_on": "validation split",
                "attempts": [a.to_dict(max_drop) for a in attempts]}

    def _judged(self, method: str, fmt: str, model: nn.Module, options: ExportOptions, result: ExportResult,
                train_seconds: float = 0.0) -> Attempt:
        x, y = self._validation(options)
        reference = reference_logits(fold_batchnorm(model), x)
        val = compare(FORMATS[fmt].run(result.path, x, result.layout), reference, y, result.path.name)
        return Attempt(method, result, val, train_seconds)

    def _validation(self, options: ExportOptions) -> tuple[np.ndarray, np.ndarray]:
        """The validation split as runtimes see it; the eval set when there is none (data.val_fraction = 0)."""
        if self._val is None:
            data = self.ctx.data
            if len(data.y_val):
                self._val = (data.x_val, data.y_val)
            else:
                log.warning("no validation split (data.val_fraction = 0): int8 methods are chosen on the test split")
                self._val = (options.eval_x, options.eval_y)
        return self._val

    def _qat_inputs(self, model_name: str) -> qat.QatInputs:
        layout, cfg = self.ctx.layout, self.ctx.cfg
        return qat.QatInputs(model=model_name, checkpoint_sha=sha256_file(layout.checkpoint(model_name)),
                             supervisor_sha=sha256_file(layout.checkpoint(qat.supervisor(model_name))),
                             layout=cfg.export.tflite_layout, seed=cfg.run.seed)

    def _qat_model(self, model_name: str, model: nn.Module, sample: torch.Tensor) -> tuple[qat.QatResult, float]:
        """The model's QAT copy, and the training seconds this call paid (0 when already made)."""
        if model_name in self._qat:
            return self._qat[model_name], 0.0
        ctx = self.ctx
        supervisor = (model if qat.supervisor(model_name) == model_name
                      else ctx.load_checkpoint(qat.supervisor(model_name)))
        train = ctx.tensors("train") if model_name == "teacher" else transfer_set(ctx)
        trained = qat.train_qat(ctx.cfg, self._qat_inputs(model_name), model=model, supervisor_model=supervisor,
                                sample=sample, train=tuple(t.cpu() for t in train),
                                val=tuple(t.cpu() for t in ctx.tensors("val")),
                                cache=ctx.layout.qat_model(model_name),
                                resume=ctx.layout.resume_file(f"qat-{model_name}"))
        self._qat[model_name] = trained
        return trained, 0.0 if trained.facts.get("reused") else trained.facts["train_seconds"]
