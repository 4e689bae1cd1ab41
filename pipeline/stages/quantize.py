"""The quantize stage: choose the calibration samples that post-training int8 quantization uses.

Samples come from the train split only (never the eval set the report scores on), stratified by
class so that rare classes shape the activation ranges too. The converters that need them run in
the export stage, where each int8 format calibrates on exactly this file.
"""
from __future__ import annotations

import numpy as np

from edgekd.fileio import write_npz
from edgekd.pipeline.stages.context import StageContext, StageResult


def stratified_sample(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of min(n, len(y)) samples, classes taken round-robin in seeded random order."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(y == c)).tolist() for c in np.unique(y)]
    chosen: list[int] = []
    while len(chosen) < min(n, len(y)):
        for idx in per_class:
            if idx and len(chosen) < n:
                chosen.append(idx.pop())
    return np.sort(np.asarray(chosen, dtype=np.int64))


def select_calibration(ctx: StageContext) -> StageResult:
    """Write `data/calibration.npz` (x float32 NCHW as runtimes see it, y, train-split indices)."""
    data = ctx.data
    idx = stratified_sample(data.y_train, ctx.cfg.export.calibration_samples, ctx.cfg.run.seed)
    path = ctx.layout.calibration
    write_npz(path, x=data.x_train[idx], y=data.y_train[idx], train_indices=idx)
    counts = np.bincount(data.y_train[idx], minlength=data.num_classes)
    return StageResult([path], {"samples": int(len(idx)), "split": "train", "per_class": counts.tolist()})
