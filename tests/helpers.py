"""Shared test settings: the training seed comes from EDGEKD_TEST_SEED (default 0).

Run the suite for other seeds and other CPU kernel paths before trusting a learned-number assertion:

    EDGEKD_TEST_SEED=3 ATEN_CPU_CAPABILITY=default DNNL_MAX_CPU_ISA=SSE41 MKL_CBWR=COMPATIBLE make test
"""
import math
import os

SEED = int(os.environ.get("EDGEKD_TEST_SEED", "0"))


def binomial_floor(expected: float, n: int, sigmas: float = 4.0) -> float:
    """A floor for an accuracy measured on `n` samples whose typical value is `expected`: `sigmas`
    binomial standard errors below it, so sampling noise alone almost never crosses it."""
    return expected - sigmas * math.sqrt(expected * (1 - expected) / n)


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
# digits through export, bench and report: one ONNX and one int8 TFLite student (PTQ: on digits' small
# validation split auto would train QAT, which tests/test_qat.py covers), a tiny timing budget
FAST_BENCH = ["teacher.train.epochs=3", "student.train.epochs=3", "run.device=cpu", f"run.seed={SEED}",
              "export.models=['student']", "export.formats=['onnx', 'tflite_int8']", "export.int8_method=ptq",
              "bench.processes=2",
              "bench.min_runs=20", "bench.min_seconds=0.02", "bench.warmup=2", "bench.eager=['student']"]
