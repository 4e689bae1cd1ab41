"""How each int8 file is made (`export.int8_method`), for the export stage.

- "ptq": post-training calibration only.
- "qat": the file is written from a quantization-aware trained copy of the model (pipeline.training.qat).
- "auto": PTQ first; when its drop on the validation split is not within `export.max_int8_drop` (a fail
  or a "cannot tell" of the paired rule) and it loses more samples than it gains there, QAT too; the QAT
  file is kept only when it ranks higher there: a better verdict (pass over "cannot tell" over fail), or
  the same verdict without losing more samples than it gains (`_rank`). A PTQ file that passes costs no
  training.

Then, with `export.int8_fallback`, a kept file still not within the limit gets its most sensitive layers
in float, one more at a time ("mixed"; both int8 formats can keep a layer in float: Format.float_layers).

The choice is made on the validation split; the test split (the eval set) only reports the kept file,
as for every other file. Each attempt's numbers (test and validation accuracy, drop, seconds) go to
the sidecar under `quantization`.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.export import qat as qat_lib
from edgekd.export.common import fold_batchnorm, reference_logits, weighted_layers
from edgekd.export.driver import export_model
from edgekd.export.formats import FORMATS, ExportOptions, ExportResult
from edgekd.export.parity import Parity, compare, int8_drop_check
from edgekd.fileio import sha256_file
from edgekd.pipeline.stages.context import StageContext, transfer_set
from edgekd.pipeline.training import qat

log = logging.getLogger(__name__)


@dataclass
class Attempt:
    method: str  # "ptq" | "qat" | "mixed"
    result: ExportResult  # parity on the eval set (test split)
    val: Parity  # the same file against the fp32 model on the validation split
    train_seconds: float = 0.0  # QAT training this attempt paid for (0 when PTQ, or reused)
    size_bytes: int = 0
    details: dict = field(default_factory=dict)  # mixed: the float layers, each layer's sensitivity, search time

    def to_dict(self, max_drop: float) -> dict:
        check = int8_drop_check(self.val, max_drop)
        return {"method": self.method, "accuracy": self.result.parity.accuracy,
                "reference_accuracy": self.result.parity.reference_accuracy,
                "drop": self.result.parity.reference_accuracy - self.result.parity.accuracy,
                "val_accuracy": self.val.accuracy, "val_reference_accuracy": self.val.reference_accuracy,
                "val_verdict": check.verdict, "export_seconds": round(self.result.seconds, 2),
                "train_seconds": round(self.train_seconds, 2), "size_bytes": self.size_bytes,
                **self.details}


@dataclass
class Int8Maker:
    """Makes the int8 files of one export stage; a model's QAT copy is trained once for all its formats."""

    ctx: StageContext
    _val: tuple[np.ndarray, np.ndarray] | None = None
    _references: dict[int, tuple[nn.Module, np.ndarray]] = field(default_factory=dict)  # id(model) -> its val logits
    _inputs: dict[str, qat.QatInputs] = field(default_factory=dict)
    _qat: dict[str, qat.QatResult] = field(default_factory=dict)

    def method(self, model_name: str) -> str:
        e = self.ctx.cfg.export
        return e.int8_method if model_name in e.qat.models else "ptq"

    def key_inputs(self, model_name: str) -> dict:
        """What an int8 file depends on beyond its PTQ conversion's inputs (part of its cache key)."""
        e = self.ctx.cfg.export
        method = self.method(model_name)
        return {"int8_method": method, "int8_fallback": e.int8_fallback, "val_fraction": self.ctx.cfg.data.val_fraction,
                "qat": None if method == "ptq" else self._qat_inputs(model_name).key(self.ctx.cfg)}

    def make(self, model_name: str, fmt: str, model: nn.Module, sample: torch.Tensor,
             options: ExportOptions) -> tuple[ExportResult, dict]:
        """Write `model`'s file of int8 format `fmt`; the result and the sidecar's `quantization` entry."""
        layout, method = self.ctx.layout, self.method(model_name)
        path = layout.export_file(model_name, fmt)
        attempts: list[Attempt] = []
        if method != "qat":
            attempts.append(self._judged("ptq", fmt, model, options, export_model(fmt, model, sample, path, options)))
            if method == "auto" and self._short(attempts[0]):
                log.info("%s: PTQ on the validation split: %s; trying quantization-aware training", path.name,
                         self._check(attempts[0]).describe())
        if method == "qat" or (method == "auto" and self._short(attempts[0])):
            trained, seconds = self._qat_model(model_name, model, sample)
            candidate = layout.int8_candidate(path, "qat")
            result = export_model(fmt, model, sample, candidate, options, qat_net=trained.net)
            attempts.append(self._judged("qat", fmt, model, options, result, seconds))
        best = max(attempts, key=self._rank)  # max keeps the first of equals: PTQ
        if self._short(best) and self.ctx.cfg.export.int8_fallback and FORMATS[fmt].float_layers:
            base = model if best.method == "ptq" else qat_lib.float_model(model, self._qat[model_name].net)
            mixed = self._fallback(fmt, model, base, sample, options, path)
            attempts.append(mixed)
            best = max(attempts, key=self._rank)
        if best.result.path != path:  # the kept file goes to its place
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(best.result.path, path)
            best.result.path = path
        shutil.rmtree(layout.int8_candidates, ignore_errors=True)  # the others
        return best.result, self._entry(method, best, attempts)

    def _fallback(self, fmt: str, model: nn.Module, base: nn.Module, sample: torch.Tensor, options: ExportOptions,
                  path: Path) -> Attempt:
        """Keep the most sensitive layers in float, one more at a time, until the validation check passes (or
        the file loses no more samples than it gains).

        A layer's sensitivity is the validation drop when it alone is quantized (every other layer float).
        `base` holds the weights to convert (the model's, or its QAT-trained ones), `model` the fp32 reference.
        """
        start = time.perf_counter()
        candidate = self.ctx.layout.int8_candidate(path, "mixed")
        layers = weighted_layers(base)

        def convert(float_layers: tuple[str, ...]) -> Attempt:
            opts = dataclasses.replace(options, float_layers=float_layers)
            return self._judged("mixed", fmt, model, opts, export_model(fmt, base, sample, candidate, opts))

        sensitivity = {}
        for layer in layers:
            alone = convert(tuple(x for x in layers if x != layer))
            sensitivity[layer] = alone.val.reference_accuracy - alone.val.accuracy
        ranked = sorted(layers, key=lambda x: -sensitivity[x])
        tried = []
        for k in range(1, len(ranked) + 1):
            tried.append(convert(tuple(ranked[:k])))
            if not self._short(tried[-1]):
                break
        k = 1 + max(range(len(tried)), key=lambda i: self._rank(tried[i]))  # first of equals: fewest float layers
        best = tried[-1] if k == len(tried) else convert(tuple(ranked[:k]))  # the candidate holds the last one tried
        best.details = {"float_layers": ranked[:k], "sensitivity": {x: round(v, 4) for x, v in sensitivity.items()},
                        "layers": len(layers), "search_seconds": round(time.perf_counter() - start, 2)}
        log.info("%s: %d of %d layers kept in float (%s): %s", path.name, len(best.details["float_layers"]), len(layers),
                 ", ".join(best.details["float_layers"]), self._check(best).describe())
        return best

    def _check(self, attempt: Attempt):
        return int8_drop_check(attempt.val, self.ctx.cfg.export.max_int8_drop)

    def _passes(self, attempt: Attempt) -> bool:
        return self._check(attempt).verdict == "pass"

    def _short(self, attempt: Attempt) -> bool:
        """Whether to try harder: the file is not within the limit on the validation split, and it does lose
        samples (more lost than gained). A "cannot tell" with nothing lost is the split's size, not int8:
        training or float layers could not change it, and float layers would cost latency for nothing."""
        return not self._passes(attempt) and attempt.val.reference_only_correct > attempt.val.exported_only_correct

    def _rank(self, attempt: Attempt) -> tuple[int, bool]:
        """Which file to keep, by its paired verdict on the validation split: pass over "cannot tell" over fail;
        within a verdict, a file that is not short (loses no more samples than it gains: what made `auto`
        try harder is gone) over one that is. Beyond that files are equal (a few samples more or less
        right is within the split's noise), and `max` keeps the first: PTQ before QAT before mixed, fewer
        float layers before more."""
        return {"fail": 0, "cannot tell": 1, "pass": 2}[self._check(attempt).verdict], not self._short(attempt)

    def _entry(self, method: str, chosen: Attempt, attempts: list[Attempt]) -> dict:
        max_drop = self.ctx.cfg.export.max_int8_drop
        return {"int8_method": chosen.method, "setting": method, "decided_on": "validation split",
                "attempts": [a.to_dict(max_drop) for a in attempts]}

    def _judged(self, method: str, fmt: str, model: nn.Module, options: ExportOptions, result: ExportResult,
                train_seconds: float = 0.0) -> Attempt:
        x, y = self._validation(options)
        if id(model) not in self._references:  # every attempt of a model is judged against the same logits
            self._references[id(model)] = (model, reference_logits(fold_batchnorm(model), x))
        reference = self._references[id(model)][1]
        val = compare(FORMATS[fmt].run(result.path, x, result.layout), reference, y, result.path.name)
        return Attempt(method, result, val, train_seconds, result.path.stat().st_size)

    def _validation(self, options: ExportOptions) -> tuple[np.ndarray, np.ndarray]:
        """The validation split as runtimes see it; the eval set when there is none (data.val_fraction = 0)."""
        if self._val is None:
            data = self.ctx.data
            if len(data.y_val):
                self._val = (np.asarray(data.x_val), data.y_val)
            else:
                log.warning("no validation split (data.val_fraction = 0): int8 methods are chosen on the test split")
                self._val = (options.eval_x, options.eval_y)
        return self._val

    def _qat_inputs(self, model_name: str) -> qat.QatInputs:
        """Hashed once per model: every int8 format's cache key and the training itself need them."""
        if model_name not in self._inputs:
            layout, cfg = self.ctx.layout, self.ctx.cfg
            self._inputs[model_name] = qat.QatInputs(
                model=model_name, checkpoint_sha=sha256_file(layout.checkpoint(model_name)),
                supervisor_sha=sha256_file(layout.checkpoint(qat.supervisor(model_name))),
                layout=cfg.export.tflite_layout, seed=cfg.run.seed)
        return self._inputs[model_name]

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
