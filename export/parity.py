"""Parity: an exported file against the PyTorch model it came from, on the whole eval set."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from edgekd.errors import ParityError

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
    reference_only_correct: int = 0  # samples PyTorch gets right and the file gets wrong
    exported_only_correct: int = 0  # and the other way round

    def to_dict(self) -> dict:
        return asdict(self)


def compare(exported: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> Parity:
    diff = np.abs(exported - reference)
    pred = exported.argmax(1)
    right, ref_right = pred == labels, reference.argmax(1) == labels
    return Parity(top1_agreement=float((pred == reference.argmax(1)).mean()), max_abs_diff=float(diff.max()),
                  mean_abs_diff=float(diff.mean()), n=len(labels), accuracy=float(right.mean()),
                  reference_accuracy=float(ref_right.mean()),
                  reference_only_correct=int((ref_right & ~right).sum()), exported_only_correct=int((right & ~ref_right).sum()))


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


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (n up to millions)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    return min(1.0, sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq)
                        for i in range(k + 1)))


def _clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for a binomial proportion k / n, by bisection on the CDF."""
    tail = (1 - level) / 2

    def crossing(f) -> float:
        """The p in [0, 1] where the increasing function f(p) reaches `tail`."""
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if f(mid) >= tail else (mid, hi)
        return (lo + hi) / 2
    lower = 0.0 if k == 0 else crossing(lambda p: 1 - _binom_cdf(k - 1, n, p))  # P(X >= k) = tail
    upper = 1.0 if k == n else crossing(lambda p: 1 - _binom_cdf(k, n, p) - (1 - 2 * tail))  # P(X <= k) = tail
    return lower, upper


@dataclass(frozen=True)
class Int8Check:
    """An int8 file's accuracy drop judged on paired samples (McNemar): only the samples on which the
    two models disagree about correctness carry information about the drop."""

    drop: float  # fp32 accuracy minus int8 accuracy, a fraction
    ci95: tuple[float, float]
    reference_only_correct: int
    exported_only_correct: int
    n: int
    p_value: float  # one-sided exact McNemar: how likely a drop this large is when int8 loses nothing
    max_drop: float
    failed: bool  # the drop exceeds max_drop and is significant (p < 0.05)

    def to_dict(self) -> dict:
        return {**asdict(self), "ci95": list(self.ci95)}

    def describe(self) -> str:
        lo, hi = self.ci95
        return (f"drop {100 * self.drop:+.2f} points (95 % CI {100 * lo:+.2f}..{100 * hi:+.2f}; "
                f"{self.reference_only_correct} samples lost, {self.exported_only_correct} gained of {self.n}; "
                f"McNemar p = {self.p_value:.3g})")


def int8_drop_check(parity: Parity, max_drop: float, alpha: float = 0.05) -> Int8Check:
    """Fail only a drop that is both above `max_drop` and more than the eval set's noise."""
    b, c, n = parity.reference_only_correct, parity.exported_only_correct, parity.n
    m = b + c
    drop = (b - c) / n
    if m == 0:
        p_value, ci = 1.0, (-3.0 / n, 3.0 / n)  # nothing changed: the rule of three bounds the discordance
    else:
        p_value = 1.0 - _binom_cdf(b - 1, m, 0.5)  # P(X >= b) when losses and gains are equally likely
        lo, hi = _clopper_pearson(b, m)
        ci = ((2 * lo - 1) * m / n, (2 * hi - 1) * m / n)
    return Int8Check(drop, ci, b, c, n, p_value, max_drop, drop > max_drop and p_value < alpha)
