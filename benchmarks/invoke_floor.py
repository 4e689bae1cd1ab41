"""How much of a TFLite file's p50 is the runtime's own cost: one LiteRT invoke of the agent's no-op
model (y = x + x) against the given files, in one process, one thread, median of 4,000 invokes.

    python benchmarks/invoke_floor.py runs/mnist5k/export/student.int8.tflite runs/mnist5k/export/teacher.int8.tflite
"""
from __future__ import annotations

import base64
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from edgekd.bench.agent.runtimes.tflite import Runner


def p50_us(interp, x: np.ndarray, n: int = 4000) -> float:
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    for _ in range(500):
        interp.invoke()
    times = []
    for _ in range(n):
        start = time.perf_counter_ns()
        interp.invoke()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


def main(paths: list[str]) -> int:
    noop = Interpreter(model_content=base64.b64decode(Runner.NOOP), num_threads=1)
    noop.allocate_tensors()
    print(f"no-op model: p50 {p50_us(noop, np.ones((1, 4), np.float32)):.2f} µs")
    for path in paths:
        interp = Interpreter(model_path=path, num_threads=1)
        interp.allocate_tensors()
        d = interp.get_input_details()[0]
        print(f"{Path(path).name}: p50 {p50_us(interp, np.zeros(d['shape'], d['dtype'])):.2f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
