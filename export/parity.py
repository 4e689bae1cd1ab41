"""Parity: an exported file against the PyTorch model it came from, on the whole eval set."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, get_args

import numpy as np

from edgekd.errors import ParityError
from edgekd.paired import PairedDrop, judge_drop

Precision = Literal["fp32", "fp16", "int8"]

# (minimum top-1 agreement, maximum |Δlogit| or None) an artifact must meet, by precision, unless its
# format states its own (Format.parity). int8 has no fixed logit tolerance: its accuracy drop is judged
# by the export stage instead.
THRESHOLDS: dict[Precision, tuple[float, float | None]] = {
    "fp32": (0.999, 1e-3),
    "fp16": (0.995, None),
    "int8": (0.0, None),
}
assert set(THRESHOLDS) == set(get_args(Precision))


@dataclass(frozen=True)
class Parity:
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    n: int
    accuracy: float  # of the exported file on the eval labels
    reference_accuracy: float  # of the PyTorch model on the same samples
    reference_only_correct: int = 0  # samples PyTorch gets right and the file gets wrong
    exported_only_correct: int = 0  # and the other way round

    def to_dict(self) -> dict:
        return asdict(self)


def compare(exported: np.ndarray, reference: np.ndarray, labels: np.ndarray, artifact: str = "exported file") -> Parity:
    """Parity of `exported` logits with the PyTorch `reference`; ParityError when either holds NaN or
    infinity (`NaN > tolerance` is False: a NaN would otherwise pass every threshold)."""
    for name, logits in ((artifact, exported), ("the PyTorch model", reference)):
        bad = ~np.isfinite(logits)
        if bad.any():
            rows = int(bad.any(axis=tuple(range(1, logits.ndim))).sum())
            raise ParityError(f"{artifact}: {name} gives NaN or infinite logits on {rows} of {len(logits)} eval samples; "
                              "a model whose outputs are not finite cannot be checked or shipped: fix the model "
                              "(check its forward for division by zero or log of 0) and re-run")
    diff = np.abs(exported - reference)
    pred = exported.argmax(1)
    right, ref_right = pred == labels, reference.argmax(1) == labels
    return Parity(top1_agreement=float((pred == reference.argmax(1)).mean()), max_abs_diff=float(diff.max()),
                  mean_abs_diff=float(diff.mean()), n=len(labels), accuracy=float(right.mean()),
                  reference_accuracy=float(ref_right.mean()),
                  reference_only_correct=int((ref_right & ~right).sum()), exported_only_correct=int((right & ~ref_right).sum()))


def check(parity: Parity, tolerance: tuple[float, float | None], precision: str, artifact: str) -> None:
    """Raise ParityError when `parity` misses `tolerance` (min top-1 agreement, max |Δlogit| or None)."""
    min_agree, max_diff = tolerance
    problems = []
    if parity.top1_agreement < min_agree:
        problems.append(f"top-1 agreement {parity.top1_agreement:.4%} < {min_agree:.1%}")
    if max_diff is not None and parity.max_abs_diff > max_diff:
        problems.append(f"max |Δlogit| {parity.max_abs_diff:.2e} > {max_diff:.0e} (mean {parity.mean_abs_diff:.2e})")
    if problems:
        raise ParityError(f"{artifact}: {precision} parity failed on {parity.n} eval samples: {'; '.join(problems)}. "
                          "The converter changed the model's numerics; report the layer types to the edgekd issue "
                          "tracker, or export this model in another format")


def int8_drop_check(parity: Parity, max_drop: float) -> PairedDrop:
    """The int8 file against its fp32 PyTorch model on the same samples: the paired non-inferiority rule
    of `edgekd.paired` (fail only when the whole interval is beyond `max_drop`)."""
    n = parity.n
    return judge_drop(n, round(parity.reference_accuracy * n), round(parity.accuracy * n),
                      parity.reference_only_correct, parity.exported_only_correct, max_drop)
