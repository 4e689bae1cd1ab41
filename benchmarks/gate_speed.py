"""Gate speed and regression error rates.

    python benchmarks/gate_speed.py

1. Times `edgekd gate`'s rule check on a synthetic report of 50 results and 20 budgets (median of 20).
2. Regression trials with simulated agent results (5 processes, each in a fast or a 17 % slower mode
   for its whole life, lognormal noise and scheduler spikes inside): the same model re-measured
   (should not fail) and a model made 50 % slower (should fail), 100 trials each, at
   max_latency_increase = 0.10. `benchmarks/gate_noise.py` does the same with real measurements.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from edgekd.bench.agent.stats import combine_latency
from edgekd.pipeline.reporting.budgets import Budget, Regression
from edgekd.pipeline.reporting.gate import check, check_regression


def synthetic_report(n_results: int, rng: np.random.Generator) -> dict:
    results, artifacts = [], []
    for i in range(n_results):
        file = f"export/model{i % 10}.{['onnx', 'tflite', 'fp16.tflite', 'int8.tflite', 'int8.onnx'][i // 10]}"
        artifacts.append({"file": file, "model": f"model{i % 10}", "format": "onnx" if file.endswith("onnx") else "tflite",
                          "precision": "int8" if "int8" in file else "fp32", "size_bytes": int(rng.integers(1e4, 1e6))})
        p50 = float(rng.uniform(0.01, 5))
        results.append({"artifact": file, "target": ["pi4", "local"][i % 2], "accuracy": float(rng.uniform(0.9, 1)),
                        "peak_rss_mb": float(rng.uniform(20, 200)), "n_eval": 1000,
                        "latency_ms": {"p50": p50, "p95": p50 * 1.3, "p99": p50 * 1.6, "p50_ci95": [p50 * 0.98, p50 * 1.02]}})
    return {"schema": "edgekd.report/1", "artifacts": artifacts, "results": results}


def trial(base: float, rng: np.random.Generator) -> dict:
    processes = []
    for _ in range(5):
        s = base * (1.17 if rng.random() < 1 / 3 else 1.0) * rng.lognormal(0.0, 0.05, 200)
        spikes = rng.random(200) < 0.01
        s[spikes] *= rng.uniform(2, 20, spikes.sum())
        processes.append(s.tolist())
    return {"schema": "edgekd.report/1", "results": [{"artifact": "m.tflite", "target": "pi4", "accuracy": 0.95,
                                                      "n_eval": 1000, "latency_ms": combine_latency(processes)}]}


def main() -> None:
    rng = np.random.default_rng(0)
    report = synthetic_report(50, rng)
    budgets = [Budget(target=["*", "pi4"][i % 2], artifact=["*.tflite", "model*.onnx", "*"][i % 3], max_p95_ms=3.0,
                      max_size_kb=900, min_accuracy=0.92, max_accuracy_drop=0.02) for i in range(20)]
    times = []
    for _ in range(20):
        start = time.perf_counter()
        verdicts = check(report, budgets) + check_regression(report, report, Regression())
        times.append(time.perf_counter() - start)
    print(f"gate: 50 results x 20 budgets -> {len(verdicts)} verdicts in {1e3 * statistics.median(times):.1f} ms (median of 20)")
    for label, factor in (("same model re-measured", 1.0), ("50 % slower", 1.5)):
        statuses = [check_regression(trial(factor, rng), trial(1.0, rng), Regression(max_latency_increase=0.10))[0].status
                    for _ in range(100)]
        print(f"regression, {label}: {statuses.count('fail')} fail, {statuses.count('inconclusive')} inconclusive, "
              f"{statuses.count('pass')} pass of 100 trials")


if __name__ == "__main__":
    main()
