"""One rule for "is this file's accuracy within `limit` of that one's?", used by the int8 check, the file
to ship and the gate.

Both files are scored on the same samples, so the comparison is paired: only the samples one gets
right and the other wrong carry information about the drop. The drop's 95 % interval is Newcombe's
hybrid score interval for paired proportions (Newcombe 1998, "Improved confidence intervals for the
difference between binomial proportions based on paired data", method 10): Wilson intervals of both
accuracies joined with the correlation of the paired outcomes. Unlike an interval conditioned on the
number of disagreements, it lets that number vary too, and it stays inside [-1, 1] near 100 %.

The verdict is a non-inferiority decision: the whole interval above the limit fails, the whole
interval at or below it passes, and an interval that straddles it is "cannot tell", with about how
many samples would decide it. A point estimate is never compared with the limit.

Standard library only: the reporting side and the exporters both use it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

Z95 = 1.959963984540054  # two-sided 95 % normal quantile
Verdict = Literal["pass", "fail", "cannot tell"]


@dataclass(frozen=True)
class PairedDrop:
    """How far `new` falls below `reference` on the same n samples, and what that says against a limit."""

    n: int
    lost: int  # samples the reference gets right and the new file wrong
    gained: int  # and the other way round
    reference_correct: int
    new_correct: int
    drop: float  # reference accuracy minus new accuracy, a fraction
    ci95: tuple[float, float]
    limit: float
    verdict: Verdict
    samples_to_decide: int | None  # about how many samples would take the interval off the limit (cannot tell only)
    paired: bool = True  # False when only the two accuracies were known (a wider, unpaired interval)

    def to_dict(self) -> dict:
        return {**asdict(self), "ci95": list(self.ci95)}

    def describe(self) -> str:
        """'-1.10 pts (95 % interval -1.97 pts..-0.40 pts; 12 lost, 1 gained of 1,000) against …: cannot tell …'."""
        lo, hi = self.ci95
        counts = (f"{self.lost} lost, {self.gained} gained of {self.n:,}" if self.paired
                  else f"unpaired, {self.n:,} samples")
        text = (f"{points(-self.drop)} (95 % interval {points(-hi)}..{points(-lo)}; {counts}) against a limit of "
                f"{100 * self.limit:.2f} pts: ")
        if self.verdict == "pass":
            return text + "within the limit"
        if self.verdict == "fail":
            return text + "beyond the limit"
        more = (f"about {self.samples_to_decide:,} samples would decide it" if self.samples_to_decide
                else "the drop sits on the limit")
        return text + f"cannot tell, the interval straddles the limit ({more})"


def points(fraction: float) -> str:
    """A difference of accuracies in percentage points, signed; never "-0.00"."""
    return f"{100 * fraction:+.2f} pts".replace("+0.00", "0.00").replace("-0.00", "0.00")


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the proportion k / n."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_paired(both: int, lost: int, gained: int, neither: int, z: float = Z95,
                    paired: bool = True) -> tuple[float, float]:
    """Interval of p_ref - p_new from a paired 2x2 table (both right, only ref right, only new right,
    both wrong). With paired=False the correlation term is dropped (independent samples)."""
    n = both + lost + gained + neither
    p_ref, p_new = (both + lost) / n, (both + gained) / n
    l_ref, u_ref = wilson(both + lost, n, z)
    l_new, u_new = wilson(both + gained, n, z)
    denominator = (both + lost) * (gained + neither) * (both + gained) * (lost + neither)
    phi = (both * neither - lost * gained) / math.sqrt(denominator) if paired and denominator else 0.0
    d = p_ref - p_new
    below = math.sqrt(max(0.0, (p_ref - l_ref) ** 2 - 2 * phi * (p_ref - l_ref) * (u_new - p_new) + (u_new - p_new) ** 2))
    above = math.sqrt(max(0.0, (u_ref - p_ref) ** 2 - 2 * phi * (u_ref - p_ref) * (p_new - l_new) + (p_new - l_new) ** 2))
    return max(-1.0, d - below), min(1.0, d + above)


def judge_drop(n: int, reference_correct: int, new_correct: int, lost: int, gained: int, limit: float,
               paired: bool = True) -> PairedDrop:
    """The non-inferiority verdict of `new` against `reference` at `limit` (a fraction: 0.01 = 1 point)."""
    both = reference_correct - lost
    neither = n - both - lost - gained
    if n <= 0 or min(both, neither, lost, gained) < 0 or new_correct != both + gained:
        raise ValueError(f"inconsistent paired counts: n={n}, reference {reference_correct}, new {new_correct}, "
                         f"lost {lost}, gained {gained}")
    lo, hi = newcombe_paired(both, lost, gained, neither, paired=paired)
    drop = (lost - gained) / n
    tol = 1e-12
    verdict: Verdict = "fail" if lo > limit + tol else "pass" if hi <= limit + tol else "cannot tell"
    needed = None
    if verdict == "cannot tell" and abs(drop - limit) > tol:
        # the half-width shrinks as 1/sqrt(n): the side of the interval that reaches across the limit
        half = (drop - lo) if drop > limit else (hi - drop)
        needed = math.ceil(n * (half / abs(drop - limit)) ** 2)
    return PairedDrop(n, lost, gained, reference_correct, new_correct, drop, (lo, hi), limit, verdict, needed, paired)


def correct_mask(bits_hex: str, n: int) -> list[bool]:
    """Per-sample correctness from the agent's `correct_bits` (numpy packbits, big bit order, as hex)."""
    raw = bytes.fromhex(bits_hex)
    if len(raw) != (n + 7) // 8:
        raise ValueError(f"correct_bits holds {8 * len(raw)} bits for {n} samples")
    return [bool(raw[i >> 3] >> (7 - (i & 7)) & 1) for i in range(n)]


def judge_rows(reference: dict, new: dict, limit: float) -> PairedDrop:
    """Two result rows measured on the same eval set: paired on their `correct_bits` where both have
    them, else (older results) the unpaired interval from the two accuracies alone."""
    n = int(new["n_eval"])
    if int(reference["n_eval"]) != n:
        raise ValueError(f"{reference['artifact']} was scored on {reference['n_eval']} samples and "
                         f"{new['artifact']} on {n}")
    if reference.get("correct_bits") and new.get("correct_bits"):
        ref, cur = correct_mask(reference["correct_bits"], n), correct_mask(new["correct_bits"], n)
        lost = sum(r and not c for r, c in zip(ref, cur))
        gained = sum(c and not r for r, c in zip(ref, cur))
        return judge_drop(n, sum(ref), sum(cur), lost, gained, limit)
    return judge_accuracies(reference["accuracy"], new["accuracy"], n, limit)


def judge_accuracies(reference_accuracy: float, new_accuracy: float, n: int, limit: float) -> PairedDrop:
    """The same verdict from two accuracies on n samples alone (no per-sample results): the unpaired,
    wider interval, which never claims more than the data say."""
    ref_k, new_k = round(reference_accuracy * n), round(new_accuracy * n)
    both = min(ref_k, new_k)  # any split of the table will do: without phi only the margins count
    return judge_drop(n, ref_k, new_k, ref_k - both, new_k - both, limit, paired=False)
