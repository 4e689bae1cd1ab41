"""One worker process: load one model file with its runtime, time it after warm-up, read its memory,
and score it on the eval set when asked. The record it writes is merged by the scheduler (jobs.py)
with those of the model's other processes.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.bench.agent.device import board_state, peak_rss_mb
from edgekd.bench.agent.evalset import accuracy_fields, load_eval
from edgekd.bench.agent.limits import DEFAULT_MAX_BYTES, mib
from edgekd.bench.agent.runtimes import runner_for
from edgekd.errors import AgentError
from edgekd.fileio import sha256_file


@dataclass(frozen=True)
class Timing:
    """How long one worker process times its model (timing runs until both minimums are reached)."""

    warmup: int = 20
    min_runs: int = 40
    min_seconds: float = 0.2
    max_seconds: float = 30.0

    def args(self) -> list[str]:
        return ["--warmup", str(self.warmup), "--min-runs", str(self.min_runs), "--min-seconds", str(self.min_seconds)]


class Samples:
    """Timing samples in a fixed buffer written before the model is loaded: recording them allocates
    nothing, so the memory read after timing is the model's, not the samples' (a list of 200,000
    floats holds 6 MB). When the buffer is full every other sample is dropped and from then on only
    every 2nd (4th, ...) run is kept, so the samples stay evenly spaced over the whole timing."""

    def __init__(self, capacity: int = 1 << 16):
        self.buf = np.ones(capacity)  # np.ones writes every page: resident from now on, not later
        self.n, self.stride, self.runs = 0, 1, 0

    def add(self, ms: float) -> None:
        if self.runs % self.stride == 0:
            if self.n == len(self.buf):
                self._halve()
            self.buf[self.n] = ms
            self.n += 1
        self.runs += 1

    def _halve(self) -> None:
        half = (self.n + 1) // 2
        for i in range(0, half, 4096):  # in place, in small slices: no buffer-sized temporary copy
            self.buf[i:min(i + 4096, half)] = self.buf[2 * i:2 * min(i + 4096, half):2]
        self.n, self.stride = half, self.stride * 2

    def values(self) -> list[float]:
        return self.buf[:self.n].tolist()


def time_into(run, timing: Timing, samples: Samples) -> float:
    """Time `run` after warm-up into `samples` until both minimums are reached; the first call's ms."""
    start = time.perf_counter()
    run()
    first_ms = (time.perf_counter() - start) * 1e3
    for _ in range(timing.warmup):
        run()
    began = time.perf_counter()
    while samples.runs < timing.min_runs or time.perf_counter() - began < timing.min_seconds:
        t0 = time.perf_counter_ns()
        run()
        samples.add((time.perf_counter_ns() - t0) / 1e6)
        if time.perf_counter() - began > timing.max_seconds and samples.runs >= 10:
            break
    return first_ms


def _layout(runner, sidecar: dict, sample_shape: tuple) -> str:
    """NHWC or NCHW: from the sidecar when there is one, else from the model's input shape."""
    if sidecar.get("input", {}).get("layout"):
        return sidecar["input"]["layout"]
    c, h, w = sample_shape
    return "nhwc" if tuple(runner.input_shape[1:]) == (h, w, c) and (h, w, c) != (c, h, w) else "nchw"


def _fit(x: np.ndarray, input_shape: tuple, model: Path, eval_path: Path) -> np.ndarray:
    """The eval set in the model's input shape: as it is, or reshaped when the model takes the same
    values flattened (an MLP's [1, 64] for 1x8x8 images); exit 2 when the sizes differ."""
    want = tuple(input_shape[1:])
    if want == x.shape[1:] or any(d < 1 for d in want):
        return x
    if math.prod(want) == math.prod(x.shape[1:]):
        return x.reshape(len(x), *want)
    raise AgentError(f"{model}: takes inputs of shape {list(input_shape)}, but {eval_path} holds samples of shape "
                     f"{list(x.shape[1:])}; give the eval set of the run that exported this model")


def read_sidecar(model: Path) -> dict:
    """The export sidecar beside a model ({} when there is none); exit 2 naming it when it is not JSON."""
    path = model.with_name(model.name + ".json")
    if not path.is_file():
        return {}
    try:
        sidecar = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AgentError(f"{path}: not a readable sidecar ({exc}); re-export the model or remove the file") from None
    if not isinstance(sidecar, dict):
        raise AgentError(f"{path}: expected a JSON object (an export sidecar); re-export the model or remove the file")
    return sidecar


def runtime_baseline(runner_class, threads: int) -> tuple[float, str]:
    """(VmHWM in MB, what it includes) of this process with the runtime imported and warmed by a no-op
    model run, and the eval set already loaded by the caller: the memory every model pays here before
    its own. Where the no-op run fails (an old runtime), the baseline is read after the import alone."""
    runner_class.load_runtime()
    try:
        runner_class.noop_run(threads)
        how = "runtime imported and warmed by a no-op model run"
    except Exception as exc:  # never a reason not to measure the model: only the baseline is lower
        how = f"runtime imported (its no-op model run failed: {type(exc).__name__})"
    import gc
    gc.collect()  # the no-op interpreter is freed: its heap is reused by the model's, not counted twice
    return peak_rss_mb(), how


def _checked_runner(model: Path, max_bytes: int) -> type:
    """The Runner class for `model`, once it is known to be a file within the agent's ceiling (exit 2)."""
    runner_class = runner_for(model)
    if not model.is_file():
        raise AgentError(f"{model}: no such file")
    if model.stat().st_size > max_bytes:
        raise AgentError(f"{model}: {mib(model.stat().st_size)}, over the agent's ceiling of {mib(max_bytes)}; "
                         "raise --max-bytes if this model really is that large")
    return runner_class


def _inputs(runner, sidecar: dict, x: np.ndarray | None, model: Path, eval_path: Path | None):
    """(the eval set in the model's layout and shape, or None; the one sample that is timed)."""
    if x is None:
        shape = tuple(1 if d < 1 else d for d in runner.input_shape)
        # a fixed pattern in [-1, 1], not numpy.random: its first use imports 3 MB of modules, which
        # would be counted as the model's memory
        return None, np.cos(np.arange(math.prod(shape), dtype=np.float32)).reshape(shape)
    if _layout(runner, sidecar, x.shape[1:]) == "nhwc":
        x = x.transpose(0, 2, 3, 1)  # a view: no copy of the eval set
    x = _fit(x, runner.input_shape, model, eval_path)
    return x, x[:1]


def worker(model: Path, eval_path: Path | None, threads: int, timing: Timing, with_accuracy: bool,
           max_bytes: int = DEFAULT_MAX_BYTES) -> dict:
    """Load and time one model in this process (and score it when asked): a worker record.

    Memory: `runtime_rss_mb` is this process's peak before the model (runtime_baseline), `peak_rss_mb`
    its peak after loading and timing the model; both are VmHWM, which never decreases, so the model's
    part (peak - baseline) is >= 0 by construction and includes no import or eval-set memory."""
    started = time.time()
    runner_class = _checked_runner(model, max_bytes)
    sha = sha256_file(model)
    sidecar = read_sidecar(model)
    x, y = load_eval(eval_path, max_bytes) if eval_path else (None, None)
    samples = Samples()
    baseline, baseline_how = runtime_baseline(runner_class, threads)
    baseline_how += ", eval set loaded" if x is not None else ""
    start = time.perf_counter()
    runner = runner_class(model, threads)
    init_ms = (time.perf_counter() - start) * 1e3
    x, sample = _inputs(runner, sidecar, x, model, eval_path)
    prepared = runner.prepare(sample)
    before = board_state()
    first_ms = time_into(lambda: runner.run(prepared), timing, samples)
    after = board_state()
    peak = peak_rss_mb()  # before scoring: the memory of loading and running the model, not of scoring
    record = {"artifact": sidecar.get("file", model.name), "sha256": sha, "runtime": runner.runtime,
              "runtime_version": runner.version, "threads": threads, "init_ms": init_ms, "first_ms": first_ms,
              "peak_rss_mb": peak, "runtime_rss_mb": baseline, "runtime_rss_from": baseline_how,
              "samples_ms": samples.values(), "timed_runs": samples.runs, "board_before": before,
              "board_after": after}
    if with_accuracy and x is not None:
        record.update(accuracy_fields(runner.predict(x).argmax(1), y))
    return {**record, "started_at": started, "ended_at": time.time()}



def profile_worker(model: Path, eval_path: Path | None, threads: int, timing: Timing,
                   max_bytes: int = DEFAULT_MAX_BYTES) -> dict:
    """Where one model's time goes, op by op, in this process: its unprofiled p50 first, then the
    runtime's own profiler over about a second of runs (at least timing.min_runs, at most 5,000).
    A profile record; `profiler` is None (with `why`) for a runtime that has no op profiler."""
    runner_class = _checked_runner(model, max_bytes)
    x = load_eval(eval_path, max_bytes)[0][:1] if eval_path else None
    runner = runner_class(model, threads)
    prepared = runner.prepare(_inputs(runner, read_sidecar(model), x, model, eval_path)[1])
    samples = Samples(4096)
    time_into(lambda: runner.run(prepared), timing, samples)
    p50_ms = float(np.median(samples.values()))
    runs = int(min(5000, max(timing.min_runs, max(1.0, timing.min_seconds) / (p50_ms / 1e3))))
    found = runner.profile(prepared, timing.warmup, runs)
    ops = sorted(found.get("ops", []), key=lambda op: -op["us"])
    return {**found, "ops": ops, "p50_us": 1e3 * p50_ms, "ops_sum_us": sum(op["us"] for op in ops),
            "sha256": sha256_file(model), "threads": threads}
