"""Latency statistics: percentiles of samples, a distribution-free interval for the median, and one
latency record from K processes, each weighted equally."""
from __future__ import annotations

import math

import numpy as np


def percentiles(samples_ms) -> dict:
    """Percentiles (linear interpolation), mean, std, min, max and n of latency samples."""
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
    return {"p50": float(p50), "p90": float(p90), "p95": float(p95), "p99": float(p99), "mean": float(a.mean()),
            "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "min": float(a.min()), "max": float(a.max()),
            "n": int(len(a))}


def median_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """Distribution-free interval for the median from order statistics: (lo, hi, coverage).

    The narrowest symmetric pair of order statistics whose coverage reaches `level`; with too few
    values to reach it, the whole range and the coverage it does have (5 values: 93.75 %).
    """
    v = sorted(float(x) for x in values)
    n = len(v)
    best = (v[0], v[-1], 1.0 - 2.0 * 0.5 ** n)
    for j in range(1, n // 2 + 1):  # [v[j-1], v[n-j]] covers with prob 1 - 2 P(Bin(n, .5) <= j-1)
        coverage = 1.0 - 2.0 * sum(math.comb(n, i) for i in range(j)) / 2.0 ** n
        if coverage < level:
            break
        best = (v[j - 1], v[n - j], coverage)
    return best


def subsample(samples, keep: int) -> list[float]:
    """`keep` samples evenly spaced over the run (all of them when there are fewer)."""
    a = np.asarray(samples, dtype=np.float64)
    if len(a) > keep:
        a = a[np.linspace(0, len(a) - 1, keep).round().astype(int)]
    return [round(float(s), 6) for s in a]


def pool_samples(process_samples: list[list[float]]) -> np.ndarray:
    """The samples the percentiles are computed from: as many from each process as the shortest has
    (evenly spaced), so that a process that timed more runs does not weigh more."""
    per_process = min(len(s) for s in process_samples)
    return np.concatenate([subsample(s, per_process) for s in process_samples])


def combine_latency(process_samples: list[list[float]]) -> dict:
    """One latency record from K processes: percentiles over all samples, each process weighted
    equally, plus every process's median and a 95 % interval of the median across processes."""
    pooled = pool_samples(process_samples)
    medians = [float(np.median(s)) for s in process_samples]
    lo, hi, coverage = median_interval(medians)
    return {**percentiles(pooled), "p50_ci95": [lo, hi], "p50_ci_coverage": round(coverage, 4),
            "process_p50": medians, "processes": len(process_samples)}
