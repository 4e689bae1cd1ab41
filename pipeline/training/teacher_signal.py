"""The teacher's side of distillation: its logits (and hint features) for each training batch.

Without on-the-fly augmentation the inputs never change, so the teacher's logits are computed once
for the whole transfer set and looked up by sample index: an epoch then costs what a baseline epoch
costs. Under DDP each rank computes a share of the batches once and all are gathered, so every rank
holds exactly what one process computes. With augmentation the teacher sees every augmented batch.
Hint features always come from the batch as the student saw it, through hooks that live for one
teacher pass.

The logits come from a copy of the teacher in channels-last memory, run in inference mode
(`labeller`): its logits equal the teacher's up to float rounding, and on CPU it labels a batch
about 3x faster (`benchmarks/epoch_cost.py`).
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from edgekd.pipeline.training.batches import rows_per_batch
from edgekd.pipeline.training.hints import Tap

if TYPE_CHECKING:
    from edgekd.pipeline.distributed import Distributed

log = logging.getLogger(__name__)


@dataclass
class TeacherBatch:
    logits: Tensor
    features: list[Tensor]  # one per hint pair, in order; empty without hints


class TeacherSignal:
    """The teacher's outputs for the batches `fit` draws from `x` (by sample index).

    Args:
        teacher: the trained teacher, on x's device; it is put in eval mode and never trained.
        x: the transfer set, as `fit` receives it.
        augmented: the inputs change every epoch (on-the-fly jitter): no cache.
        hints: HintConfig pairs; the teacher's module `teacher` of each is tapped on every batch.
        batch_size: of the one pass that fills the cache.
        dist: under torchrun, the process group that shares the cache's computation.
    """

    def __init__(self, teacher: nn.Module, x: Tensor, *, augmented: bool, hints: tuple = (), batch_size: int = 1024,
                 dist: Distributed | None = None):
        self.model, self.hints = teacher.eval(), tuple(hints)
        self.labeller = labeller(self.model, x)
        self.cache_seconds = 0.0
        self.cached: Tensor | None = None if augmented else self._cache(x, batch_size, dist)

    def _cache(self, x: Tensor, batch_size: int, dist: Distributed | None) -> Tensor:
        start = time.perf_counter()
        batch_size = rows_per_batch(x, batch_size)
        starts = list(range(0, len(x), batch_size))
        mine = starts[dist.rank::dist.world] if dist else starts  # under DDP each rank computes a share once
        chunks = {i: self._label(x[i:i + batch_size]).cpu() for i in mine}
        if dist:
            chunks = {i: t for part in dist.gather(chunks) for i, t in part.items()}
        # the same batches as one process computes: every rank holds the same values it would
        logits = torch.cat([chunks[i] for i in starts]).to(x.device)
        self.cache_seconds = time.perf_counter() - start
        log.info("cached teacher logits for %d transfer samples in %.2f s", len(x), self.cache_seconds)
        return logits

    def batch(self, inputs: Tensor, idx: Tensor) -> TeacherBatch:
        """The teacher's logits for samples `idx` (seen as `inputs`), and its hint features on `inputs`."""
        if not self.hints:
            return TeacherBatch(self.cached[idx] if self.cached is not None else self._label(inputs), [])
        # one pass of the labeller gives the logits and the hint features: it is a copy of the teacher with
        # the same module names, so a hint of weight 0 leaves the student exactly as without it
        tap = Tap(self.labeller, [h.teacher for h in self.hints], "teacher")
        try:
            logits = self._label(inputs)
        finally:
            tap.remove()
        features = [f.clone() for f in tap.outputs]  # ordinary tensors, as the logits are
        return TeacherBatch(self.cached[idx] if self.cached is not None else logits, features)

    def _label(self, inputs: Tensor) -> Tensor:
        with torch.inference_mode():
            logits = self.labeller(inputs.contiguous(memory_format=torch.channels_last) if inputs.dim() == 4 else inputs)
        return logits.clone()  # an ordinary tensor: the loss's backward may keep it

    def facts(self) -> dict:
        """What is worth recording beside the student."""
        return {"teacher_logits_cached": self.cached is not None, "teacher_cache_seconds": round(self.cache_seconds, 3)}


def labeller(teacher: nn.Module, x: Tensor) -> nn.Module:
    """A copy of the teacher for labelling image batches in channels-last memory (oneDNN's fast path for
    convolutions: about 3x faster per batch here, `benchmarks/epoch_cost.py`). BatchNorm is not folded:
    a TorchScript teacher cannot be, and a teacher brought as a file must label exactly as the same
    teacher trained here. The teacher itself is left as it is (hint taps name its modules)."""
    if x.dim() != 4:
        return teacher
    try:
        return copy.deepcopy(teacher).to(memory_format=torch.channels_last)
    except (RuntimeError, TypeError, AttributeError):  # a program that cannot change its layout labels as it is
        return teacher
