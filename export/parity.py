"""Parity: an exported file against the PyTorch model it came from, on the whole eval set."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from export.errors import ParityError

# (minimum top-1 agreement, maximum |Δlogit| or None) an artifact must meet, by precision.
# int8 has no fixed logit tolerance: its accuracy drop is judged by the export stage instead.
THRESHOLDS: dict[str, tuple[float, float | None]] = {
    "fp32": (0.999, 1e-3),
    "fp16": (0.995, None),
    "int8": (0.0, None),
}


@dataclass(frozen=True)
class Parity:
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    n: int
    accuracy: float  # of the exported file on the eval labels
    reference_accuracy: float  # of the PyTorch model on the same samples

    def to_dict(self) -> dict:
        return asdict(self)


def compare(exported: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> Parity:
    diff = np.abs(exported - reference)
    pred = exported.argmax(1)
    return Parity(top1_agreement=float((pred == reference.argmax(1)).mean()), max_abs_diff=float(diff.max()),
                  mean_abs_diff=float(diff.mean()), n=len(labels), accuracy=float((pred == labels).mean()),
                  reference_accuracy=float((reference.argmax(1) == labels).mean()))


def check(parity: Parity, precision: str, artifact: str) -> None:
    """Raise ParityError when `parity` misses the thresholds for `precision`."""
    min_agree, max_diff = THRESHOLDS[precision]
    problems = []
    if parity.top1_agreement < min_agree:
        problems.append(f"top-1 agreement {parity.top1_agreement:.4%} < {min_agree:.1%}")
    if max_diff is not None and parity.max_abs_diff > max_diff:
        problems.append(f"max |Δlogit| {parity.max_abs_diff:.2e} > {max_diff:.0e} (mean {parity.mean_abs_diff:.2e})")
    if problems:
        raise ParityError(f"{artifact}: {precision} parity failed on {parity.n} eval samples: {'; '.join(problems)}. "
                          "The converter changed the model's numerics; report the layer types to the edgekd issue "
                          "tracker, or export this model in another format")
