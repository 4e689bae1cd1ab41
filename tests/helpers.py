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


def ctrl_c_once(cmd: list[str], marker, *, wait_s: float, delay_s: float) -> tuple[int, str]:
    """Start `cmd`, press Ctrl-C `delay_s` after `marker` (a path) appears, and return (exit code, stderr).

    Ctrl-C as a terminal delivers it: a test suite started in the background (a CI job, `make test &`)
    inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + wait_s
    while time.time() < deadline and proc.poll() is None and not marker.exists():
        time.sleep(0.02)
    time.sleep(delay_s)  # into a later epoch
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err
