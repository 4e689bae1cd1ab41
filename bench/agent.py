"""edgekd benchmark agent: latency, memory and accuracy of model files, each with its own runtime.

    python bench/agent.py MODEL... [--eval EVAL.npz] [--threads N] [--processes K] [-o RESULTS.json]
    python bench/agent.py BUNDLE.zip [-o RESULTS.json]        # every model in an `edgekd pack` bundle
    ... [--max-bytes 512M]   # the most a bundle unpacks, and one model or eval set holds (refused: exit 2)

Runs with Python >= 3.9, the standard library, numpy and one runtime: ai_edge_litert (or
tflite_runtime) for .tflite, onnxruntime for .onnx. It is one self-contained file so that it can be
copied to a Raspberry Pi or packed into a bundle. Exit codes: 0 ok, 2 bad input (unreadable model or
eval file, a bundle or file over `--max-bytes`), 3 the runtime is not installed.

Every model is timed in K fresh worker processes (`--worker`), scheduled round-robin over the models
so that a slow spell of the machine spreads over all of them. A process keeps its own median: the
spread of those medians, not the spread of samples inside one process, is the run-to-run noise a
later comparison must allow for (pyperf measures the same way).
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

SCHEMA = "edgekd.result/1"
BENCH_SCHEMA = "edgekd.bench/1"
# The most a bundle may unpack in all, and the most one model file or eval set may hold (decompressed):
# far above any edge model or eval set, far below what kills a 1-4 GB board (`--max-bytes` changes it).
DEFAULT_MAX_BYTES = 512 * 1024 * 1024


class AgentError(Exception):
    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB ({n:,} bytes)"


def parse_size(text: str) -> int:
    """A byte count for --max-bytes: 536870912, 512M, 512MiB, 2G (powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kmg]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"--max-bytes {text!r}: expected a positive size such as 536870912, 512M or 2G")
    return int(m.group(1)) * 1024 ** " kmg".index(m.group(2).lower() or " ")


class Deadline:
    """One time limit for a whole measurement (every process, call and retry of one target), not per call."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.end = None if seconds is None else time.monotonic() + seconds

    def passed(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end

    def left(self, limit: float | None = None) -> float | None:
        """Seconds left, at most `limit` (None: no limit at all); AgentError (exit 1) once it has passed."""
        if self.end is None:
            return limit
        left = self.end - time.monotonic()
        if left <= 0:
            raise self.expired()
        return left if limit is None else min(left, limit)

    def expired(self) -> AgentError:
        return AgentError(f"over the time limit: timeout_s = {self.seconds:g} s covers the whole measurement of a "
                          "target (every process and the retry); raise timeout_s in the targets file", 1)


# ----------------------------------------------------------------------------- statistics

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


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - zero_point) * np.float32(scale)


# ----------------------------------------------------------------------------- memory, device, files

def status_mb(key: str) -> float | None:
    """A /proc/self/status memory line (VmRSS, VmHWM) in MB, or None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """VmHWM (Linux); elsewhere ru_maxrss (kB on Linux, bytes on macOS)."""
    hwm = status_mb("VmHWM")
    if hwm is not None:
        return hwm
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def device_fingerprint() -> dict:
    info = {"machine": platform.machine(), "system": platform.system(), "processor": platform.processor(),
            "python": platform.python_version(), "cpu_count": os.cpu_count()}
    try:
        info["governor"] = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        info["governor"] = None
    return info


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def board_state() -> dict:
    """CPU frequencies (MHz), thermal zone temperatures (°C) and, on a Raspberry Pi, `vcgencmd
    get_throttled`; empty where the system exposes none of them."""
    state: dict = {}
    freqs = [(_read(p / "scaling_cur_freq"), _read(p / "cpuinfo_max_freq"), _read(p / "cpuinfo_min_freq"))
             for p in sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq"))]
    freqs = [tuple(int(v) / 1000 for v in f) for f in freqs if all(v and v.isdigit() for v in f)]
    if freqs:
        state["cpu_mhz"] = {"cur": [f[0] for f in freqs], "max": max(f[1] for f in freqs), "min": min(f[2] for f in freqs)}
    temps = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        value, kind = _read(zone / "temp"), _read(zone / "type")
        if value and value.lstrip("-").isdigit():
            temps[kind or zone.name] = int(value) / 1000
    if temps:
        state["temperature_c"] = temps
    try:
        out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5).stdout
        state["throttled_flags"] = int(out.strip().split("=")[1], 16)
    except (OSError, IndexError, ValueError, subprocess.TimeoutExpired):
        pass
    return state


def thermal_summary(before: dict, after: dict) -> dict:
    """Whether the board was throttling: Raspberry Pi flags now set (under-voltage, frequency capped,
    throttled, soft temperature limit), or the CPU frequency fell by more than 5 % while timing."""
    reasons = []
    flags = after.get("throttled_flags", 0) & 0xF
    if flags:
        reasons.append(f"vcgencmd get_throttled = {hex(flags)}")
    f0, f1 = before.get("cpu_mhz", {}).get("cur"), after.get("cpu_mhz", {}).get("cur")
    if f0 and f1 and sum(f1) < 0.95 * sum(f0):
        reasons.append(f"CPU frequency fell from {sum(f0) / len(f0):.0f} to {sum(f1) / len(f1):.0f} MHz")
    return {"before": before, "after": after, "throttled": bool(reasons), "why": "; ".join(reasons)}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def npz_arrays(path: Path, max_bytes: int) -> dict[str, tuple[tuple, np.dtype]]:
    """name -> (shape, dtype) of every array in an .npz, read from the .npy headers alone, so that an
    oversized or non-numeric eval set is refused before a byte of its data is decompressed."""
    what = f"{path}: not an edgekd eval file (an .npz with arrays x and y)"
    arrays, total = {}, 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = info.filename.removesuffix(".npy")
                if name in arrays:
                    raise AgentError(f"{path}: array {name!r} appears twice; re-create the eval set with `edgekd run`")
                with archive.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(fh)
                arrays[name] = (shape, dtype)
                total += math.prod(shape) * dtype.itemsize
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise AgentError(f"{what} ({exc})") from None
    if total > max_bytes:
        raise AgentError(f"{path}: its arrays take {mib(total)} decompressed, over the agent's ceiling of {mib(max_bytes)}; "
                         "an eval set of a few thousand images takes a few MB: re-create it, or raise --max-bytes")
    return arrays


def check_eval(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Refuse (exit 2) an eval set over `max_bytes`, without x and y of numbers, or of the wrong shapes."""
    arrays = npz_arrays(path, max_bytes)
    if "x" not in arrays or "y" not in arrays:
        raise AgentError(f"{path}: not an edgekd eval file: it holds {sorted(arrays) or 'no arrays'}, expected x and y")
    (x_shape, x_dtype), (y_shape, y_dtype) = arrays["x"], arrays["y"]
    if x_dtype.kind not in "fiu" or y_dtype.kind not in "iu":
        raise AgentError(f"{path}: x must hold numbers and y integer class labels; got x of dtype {x_dtype} and y of "
                         f"dtype {y_dtype}; re-create it with `edgekd run` (data/eval.npz)")
    if len(x_shape) != 4 or len(y_shape) != 1 or x_shape[0] != y_shape[0] or not x_shape[0]:
        raise AgentError(f"{path}: expected x of shape (N, C, H, W) and y of shape (N,); got {x_shape} and {y_shape}")


def load_eval(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """x float32 (N, C, H, W) and y int64 (N,), refused (exit 2) when over `max_bytes` or not numbers."""
    check_eval(path, max_bytes)
    try:
        with np.load(path, allow_pickle=False) as f:
            # copy=False: an eval set already float32/int64 is never copied, so loading it leaves no
            # transient peak that would hide the model's own memory (see `worker`)
            x, y = f["x"].astype(np.float32, copy=False), f["y"].astype(np.int64, copy=False)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise AgentError(f"{path}: not an edgekd eval file with arrays x and y ({exc})") from None
    return x, y


def accuracy_fields(pred: np.ndarray, y: np.ndarray) -> dict:
    """accuracy, n_eval and correct_bits: which samples (in eval-set order) the file got right, packed
    big-endian (np.packbits), so a report can pair two files sample by sample; accuracy is exactly
    popcount / n_eval."""
    correct = np.asarray(pred).reshape(-1) == y
    return {"accuracy": int(correct.sum()) / len(y), "n_eval": int(len(y)),
            "correct_bits": np.packbits(correct).tobytes().hex()}


# ----------------------------------------------------------------------------- runtimes

class TFLiteRunner:
    """One LiteRT interpreter; quantizes int8 inputs and dequantizes int8 outputs with the file's own params."""

    # y = x + x on a float32 [1, 4]: a 312-byte model built with LiteRT's flatbuffer schema. Running it
    # loads and warms all a model needs except the model (interpreter, kernels, the XNNPACK delegate).
    NOOP = ("CAAAAFRGTDO+////FAAAABwAAAAsAAAAEAEAAAMAAAABAAAABAAAAPj+//8MAAAAZWRnZWtkIG5vLW9wAAAAAAEAAAAUAAAAAAAOABgAFAAQAAwA"
            "CAAEAA4AAAAUAAAAHAAAAFwAAABgAAAAZAAAAAQAAABtYWluAAAAAAEAAAAUAAAAAAAOABQAAAAQAAwACwAEAA4AAAAQAAAAAAAACwwAAAAQAAAA"
            "eP///wEAAAABAAAAAgAAAAAAAAAAAAAAAQAAAAEAAAABAAAAAAAAAAIAAAA0AAAABAAAAOD///8IAAAADAAAAAEAAAB5AAAAAgAAAAEAAAAEAAAA"
            "DAAMAAgAAAAAAAQADAAAAAgAAAAMAAAAAQAAAHgAAAACAAAAAQAAAAQAAAABAAAACAAAAAQABAAEAAAA")

    @staticmethod
    def load_runtime():
        """(Interpreter class, runtime name, version); exit 3 when no TFLite runtime is installed."""
        try:
            from ai_edge_litert.interpreter import Interpreter
            import ai_edge_litert as pkg
            name = "ai_edge_litert"
        except ImportError:
            try:
                from tflite_runtime.interpreter import Interpreter
                import tflite_runtime as pkg
                name = "tflite_runtime"
            except ImportError:
                raise AgentError("no TFLite runtime: pip install ai-edge-litert (or tflite-runtime on older "
                                 "Raspberry Pi OS images)", 3) from None
        return Interpreter, name, getattr(pkg, "__version__", "unknown")

    @classmethod
    def noop_run(cls, threads: int) -> None:
        """Create, run and drop an interpreter of the NOOP model (raises if the runtime cannot)."""
        interpreter, _, _ = cls.load_runtime()
        interp = interpreter(model_content=base64.b64decode(cls.NOOP), num_threads=threads)
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], np.ones((1, 4), np.float32))
        interp.invoke()
        assert interp.get_tensor(interp.get_output_details()[0]["index"]).tolist() == [[2.0] * 4]

    def __init__(self, path: Path, threads: int):
        interpreter, self.runtime, self.version = self.load_runtime()
        try:
            self.interp = interpreter(model_path=str(path), num_threads=threads)
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise AgentError(f"{path}: not a loadable TFLite model ({exc})") from exc
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        self.input_shape = tuple(int(v) for v in self.inp["shape"])

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Float32 batch of one -> the tensor the model takes (int8 quantized when it is int8)."""
        if self.inp["dtype"] != np.float32:
            scale, zero = self.inp["quantization"]
            return quantize(x, scale, zero, self.inp["dtype"])
        return x.astype(np.float32, copy=False)

    def run(self, prepared: np.ndarray) -> np.ndarray:
        self.interp.set_tensor(self.inp["index"], prepared)
        self.interp.invoke()
        return self.interp.get_tensor(self.out["index"])

    def logits(self, raw: np.ndarray) -> np.ndarray:
        if self.out["dtype"] != np.float32:
            scale, zero = self.out["quantization"]
            return dequantize(raw, scale, zero)
        return raw

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self.logits(self.run(self.prepare(x[i:i + 1]))) for i in range(len(x))])


class ONNXRunner:
    # y = x + x on a float32 [1, 4] (opset 13, IR 7, 82 bytes, built with onnx.helper): the no-op run
    # that creates onnxruntime's environment, thread pools and allocator before the model.
    NOOP = "CAcSBmVkZ2VrZDpACg4KAXgKAXgSAXkiA0FkZBIEbm9vcFoTCgF4Eg4KDAgBEggKAggBCgIIBGITCgF5Eg4KDAgBEggKAggBCgIIBEIECgAQDQ=="

    @staticmethod
    def load_runtime():
        try:
            import onnxruntime as ort
        except ImportError:
            raise AgentError("no ONNX runtime: pip install onnxruntime", 3) from None
        return ort, "onnxruntime", ort.__version__

    @staticmethod
    def options(ort, threads: int):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        return opts

    @classmethod
    def noop_run(cls, threads: int) -> None:
        ort, _, _ = cls.load_runtime()
        session = ort.InferenceSession(base64.b64decode(cls.NOOP), cls.options(ort, threads), providers=["CPUExecutionProvider"])
        assert session.run(None, {"x": np.ones((1, 4), np.float32)})[0].tolist() == [[2.0] * 4]

    def __init__(self, path: Path, threads: int):
        ort, self.runtime, self.version = self.load_runtime()
        try:
            self.session = ort.InferenceSession(str(path), self.options(ort, threads), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own Fail / InvalidProtobuf / NoSuchFile types
            raise AgentError(f"{path}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from exc
        meta = self.session.get_inputs()[0]
        self.name = meta.name
        self.input_shape = tuple(d if isinstance(d, int) else -1 for d in meta.shape)

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return x.astype(np.float32, copy=False)

    def run(self, prepared: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.name: prepared})[0]

    def logits(self, raw: np.ndarray) -> np.ndarray:
        return raw

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self.run(x[i:i + 256]) for i in range(0, len(x), 256)])


RUNNERS = {".tflite": TFLiteRunner, ".onnx": ONNXRunner}


# ----------------------------------------------------------------------------- one worker process

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


def worker(model: Path, eval_path: Path | None, threads: int, timing: Timing, with_accuracy: bool,
           max_bytes: int = DEFAULT_MAX_BYTES) -> dict:
    """Load and time one model in this process (and score it when asked): a worker record.

    Memory: `runtime_rss_mb` is this process's peak before the model (runtime_baseline), `peak_rss_mb`
    its peak after loading and timing the model; both are VmHWM, which never decreases, so the model's
    part (peak - baseline) is >= 0 by construction and includes no import or eval-set memory."""
    started = time.time()
    if model.suffix not in RUNNERS:
        raise AgentError(f"{model}: unknown model type {model.suffix!r}; expected one of {', '.join(RUNNERS)}")
    if not model.is_file():
        raise AgentError(f"{model}: no such file")
    if model.stat().st_size > max_bytes:
        raise AgentError(f"{model}: {mib(model.stat().st_size)}, over the agent's ceiling of {mib(max_bytes)}; "
                         "raise --max-bytes if this model really is that large")
    sha = sha256_file(model)
    sidecar = read_sidecar(model)
    x, y = load_eval(eval_path, max_bytes) if eval_path else (None, None)
    samples = Samples()
    baseline, baseline_how = runtime_baseline(RUNNERS[model.suffix], threads)
    baseline_how += ", eval set loaded" if x is not None else ""
    start = time.perf_counter()
    runner = RUNNERS[model.suffix](model, threads)
    init_ms = (time.perf_counter() - start) * 1e3
    if x is not None:
        if _layout(runner, sidecar, x.shape[1:]) == "nhwc":
            x = x.transpose(0, 2, 3, 1)  # a view: no copy of the eval set
        x = _fit(x, runner.input_shape, model, eval_path)
        sample = x[:1]
    else:
        shape = tuple(1 if d < 1 else d for d in runner.input_shape)
        # a fixed pattern in [-1, 1], not numpy.random: its first use imports 3 MB of modules, which
        # would be counted as the model's memory
        sample = np.cos(np.arange(math.prod(shape), dtype=np.float32)).reshape(shape)
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


# ----------------------------------------------------------------------------- orchestration

@dataclass
class Job:
    """One artifact to measure: the command that runs one worker process for it (the command gets
    `-o OUT`, and `--accuracy` in the first round)."""

    artifact: str
    command: list[str]
    workers: list[dict] = field(default_factory=list)
    skipped: str = ""  # why it could not be measured here (its runtime is not installed)


def die_with_parent() -> None:
    """Called first in a worker process: Linux sends it SIGTERM when its parent dies, so a killed
    benchmark leaves no orphan timing on the CPU. (Set here rather than in a preexec_fn, which would
    force fork() in a parent that may be running threads.)"""
    parent = os.getppid()
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        sys.exit(1)


def temp_dir() -> tempfile.TemporaryDirectory:
    """A temporary directory named after this process, so that one left by a killed agent can be found."""
    return tempfile.TemporaryDirectory(prefix=f"edgekd-{os.getpid()}-")


def sweep_stale_temp_dirs() -> None:
    """Remove temporary directories of agents that no longer run (killed before they could clean up)."""
    import shutil

    for path in Path(tempfile.gettempdir()).glob("edgekd-*-*"):
        pid = path.name.split("-")[1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass


def run_process(command: list[str], timeout: float | None = None, deadline: Deadline | None = None) -> dict:
    """Run one command that writes a JSON file given as `-o OUT`; its JSON, or AgentError with its
    last stderr line and its exit code (a runtime missing stays 3). It is stopped after `timeout`
    seconds or when `deadline` passes, whichever comes first."""
    limit = deadline.left(timeout) if deadline else timeout
    with temp_dir() as tmp:
        out = Path(tmp) / "out.json"
        try:
            proc = subprocess.run([*command, "-o", str(out)], capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            if deadline and deadline.passed():
                raise deadline.expired() from None
            raise AgentError(f"{' '.join(command[:3])}...: no result within {limit:.0f} s", 1) from None
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            message = lines[-1].removeprefix("error: ") if lines else f"exit code {proc.returncode}"
            raise AgentError(message, proc.returncode if proc.returncode in (2, 3) else 1)
        try:
            return json.loads(out.read_text())
        except (OSError, ValueError) as exc:
            raise AgentError(f"{' '.join(command[:3])}...: exited 0 without a readable result ({exc})", 1) from None


def memory_fields(workers: list[dict]) -> dict:
    """A row's memory from its worker records: each process's peak and runtime baseline (VmHWM before
    the model), the row's peak (the largest), runtime (the median baseline) and model part (the largest
    peak - baseline of one process). Workers that read no baseline (an older worker protocol) leave
    the runtime and model parts None: a peak minus an unknown start is not the model's memory."""
    peaks = [w["peak_rss_mb"] for w in workers]
    baselines = [w.get("runtime_rss_mb") for w in workers]
    known = all(b is not None for b in baselines)
    # VmHWM never decreases and both readings are whole kB, so peak - baseline >= 0 exactly: no clamp
    model = max(p - b for p, b in zip(peaks, baselines)) if known else None
    return {"peak_rss_mb": max(peaks), "runtime_rss_mb": float(np.median(baselines)) if known else None,
            "model_rss_mb": model, "rss_increase_mb": model,  # rss_increase_mb: the old name, kept for old readers
            "process_peak_rss_mb": peaks, "process_runtime_rss_mb": baselines if known else None,
            "runtime_rss_from": workers[0].get("runtime_rss_from")}


def merge(job: Job, target: str) -> dict:
    """The result record (schema edgekd.result/1) of one job from its worker records."""
    first = job.workers[0]
    shas = {w["sha256"] for w in job.workers}
    if len(shas) != 1:
        raise AgentError(f"{job.artifact}: the file changed while it was measured (sha256 {', '.join(sorted(shas))})")
    process_samples = [w["samples_ms"] for w in job.workers]
    scored = {k: first[k] for k in ("accuracy", "n_eval", "correct_bits") if k in first}
    return {
        "schema": SCHEMA, "artifact": job.artifact, "target": target, "sha256": first["sha256"],
        "runtime": first["runtime"], "runtime_version": first["runtime_version"], "threads": first["threads"],
        "device": device_fingerprint(), "latency_ms": combine_latency(process_samples),
        "init_ms": float(np.median([w["init_ms"] for w in job.workers])),
        "first_ms": float(np.median([w["first_ms"] for w in job.workers])),
        **memory_fields(job.workers),
        "accuracy": None, "n_eval": 0, **scored, "accuracy_on": "device",
        "started_at": min(w["started_at"] for w in job.workers), "ended_at": max(w["ended_at"] for w in job.workers),
        "thermal": thermal_summary(first.get("board_before", {}), job.workers[-1].get("board_after", {})),
        # exactly the samples latency_ms was computed from (at most 5,000 of them, evenly spaced), so
        # that a reader can recompute every percentile and check it
        "samples_ms": subsample(pool_samples(process_samples), 5000),
    }


def run_jobs(jobs: list[Job], processes: int, target: str, progress=None, timeout: float | None = None,
             deadline: Deadline | None = None) -> list[dict]:
    """Measure every job in `processes` rounds, one fresh process per job and round; accuracy in round 1.

    A job whose runtime is missing here (exit 3) is skipped with the reason and the others go on;
    use `skipped_rows(jobs)` for them. Any other failure raises AgentError. `timeout` limits each
    process, `deadline` all of them together.
    """
    for round_ in range(processes):
        for i, job in enumerate(jobs, 1):
            if job.skipped:
                continue
            if progress:
                progress(f"[round {round_ + 1}/{processes}, {i}/{len(jobs)}] {job.artifact}")
            try:
                job.workers.append(run_process([*job.command, *(["--accuracy"] if round_ == 0 else [])], timeout,
                                               deadline))
            except AgentError as exc:
                if exc.exit_code != 3:
                    raise
                job.skipped = str(exc)
    return [merge(job, target) for job in jobs if not job.skipped]


def skipped_rows(jobs: list[Job]) -> list[dict]:
    return [{"artifact": job.artifact, "reason": job.skipped} for job in jobs if job.skipped]


def worker_command(model: Path, eval_path: Path | None, threads: int, timing: Timing,
                   max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(model), "--threads", str(threads),
           *timing.args(), "--max-bytes", str(max_bytes)]
    return cmd + (["--eval", str(eval_path)] if eval_path else [])


def model_job(model: Path, eval_path: Path | None, threads: int, timing: Timing,
              max_bytes: int = DEFAULT_MAX_BYTES) -> Job:
    """The job for one model file, named as its sidecar names it (export/student.onnx) or by its file name."""
    artifact = str(read_sidecar(model).get("file", model.name))
    return Job(artifact, worker_command(model, eval_path, threads, timing, max_bytes))


def measure_files(models: list[Path], eval_path: Path | None, threads: int, processes: int, timing: Timing,
                  target: str, progress=None, max_bytes: int = DEFAULT_MAX_BYTES) -> dict:
    if eval_path:
        check_eval(eval_path, max_bytes)  # once here, before any worker starts: a bad eval set is one message
    jobs = [model_job(model, eval_path, threads, timing, max_bytes) for model in models]
    results = run_jobs(jobs, processes, target, progress)
    skipped = skipped_rows(jobs)
    if skipped and not results:
        raise AgentError("nothing could be measured: " + "; ".join(f"{s['artifact']}: {s['reason']}" for s in skipped), 3)
    return {"schema": BENCH_SCHEMA, "target": target, "results": results, "skipped": skipped}


BUNDLE_MANIFEST = "bundle.json"
# {"schema": "edgekd.bundle/1", "files": {name: {"sha256": hex, "size": bytes}}}; bundles packed before
# sizes were recorded map name -> sha256 and are still accepted (the ceiling alone bounds their files).
MAX_MANIFEST_BYTES = 1 << 20


def _unique_keys(pairs: list) -> dict:
    """json object_pairs_hook: a name listed twice would let the second entry silently win."""
    seen = [k for k, _ in pairs]
    twice = sorted({k for k in seen if seen.count(k) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)} listed twice")
    return dict(pairs)


def _listed_entry(name: str, value) -> tuple[str, int | None]:
    """(sha256, size or None) of one bundle.json entry, in either form."""
    sha, size = (value, None) if isinstance(value, str) else (value.get("sha256"), value.get("size")) \
        if isinstance(value, dict) else (None, None)
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ValueError(f"{name}: expected a sha256 (64 hex digits), got {value!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ValueError(f"{name}: expected a size in bytes, got {size!r}")
    return sha, size


def read_listing(archive: zipfile.ZipFile, bundle: Path) -> dict[str, tuple[str, int | None]]:
    """name -> (sha256, size or None) from the bundle's bundle.json."""
    fix = "make the bundle with `edgekd pack`"
    infos = [i for i in archive.infolist() if i.filename == BUNDLE_MANIFEST]
    if len(infos) > 1:
        raise AgentError(f"{bundle}: {BUNDLE_MANIFEST} appears {len(infos)} times in the zip; {fix}")
    if not infos or infos[0].file_size > MAX_MANIFEST_BYTES:
        why = "missing" if not infos else f"{mib(infos[0].file_size)}, over {mib(MAX_MANIFEST_BYTES)}"
        raise AgentError(f"{bundle}: no valid {BUNDLE_MANIFEST} inside ({why}); {fix}")
    try:
        files = json.loads(archive.read(infos[0]), object_pairs_hook=_unique_keys)["files"]
        return {name: _listed_entry(name, value) for name, value in files.items()}
    except (KeyError, ValueError, TypeError, AttributeError, RuntimeError, zipfile.BadZipFile, zlib.error) as exc:
        raise AgentError(f"{bundle}: no valid {BUNDLE_MANIFEST} inside ({exc}); {fix}") from None


def _name_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        return f"{name}: a symbolic link; bundles hold plain files only"
    if name.startswith("/") or ".." in PurePosixPath(name).parts or "\\" in name:
        return f"{name}: a path outside the bundle's directory"
    if PurePosixPath(name).as_posix() != name:
        return f"{name}: not a plain relative path (as `edgekd pack` writes them, e.g. export/student.tflite)"
    return None


def _clashes(names: set[str]) -> list[str]:
    """A name that is a file and also the folder of another name (`export` and `export/a.tflite`)."""
    return [f"{folder}: both a file and the folder of {name}" for name in sorted(names)
            for folder in ("/".join(PurePosixPath(name).parts[:k]) for k in range(1, len(PurePosixPath(name).parts)))
            if folder in names]


def _check_members(archive: zipfile.ZipFile, listed: dict, max_bytes: int) -> tuple[dict, list[str]]:
    """(name -> ZipInfo of the files to extract, problems), from the zip's directory alone: nothing is
    decompressed before every name and size is known to be what bundle.json says and under the ceiling."""
    problems, members, seen = [], {}, {}
    for info in archive.infolist():
        seen[info.filename] = seen.get(info.filename, 0) + 1
    problems += [f"{name}: appears {n} times in the zip; a bundle holds each name once" for name, n in seen.items() if n > 1]
    for info in archive.infolist():
        name = info.filename
        if info.is_dir() or name == BUNDLE_MANIFEST or seen[name] > 1:
            continue
        problem = _name_problem(info)
        if problem is None and name not in listed:
            problem = f"{name}: not listed in {BUNDLE_MANIFEST} (an extra file)"
        if problem is None and listed[name][1] is not None and info.file_size != listed[name][1]:
            problem = f"{name}: {info.file_size:,} bytes in the zip but {listed[name][1]:,} in {BUNDLE_MANIFEST}"
        if problem is None and info.file_size > max_bytes:
            problem = f"{name}: {mib(info.file_size)}, over the agent's ceiling of {mib(max_bytes)} (--max-bytes)"
        if problem:
            problems.append(problem)
        else:
            members[name] = info
    problems += _clashes(set(listed) | {i.filename for i in archive.infolist() if not i.is_dir()})
    problems += [f"{name}: listed in {BUNDLE_MANIFEST} but missing" for name in listed
                 if name not in members and not any(p.startswith(name + ":") for p in problems)]
    total = sum(info.file_size for info in members.values())
    if total > max_bytes:
        problems.append(f"the files take {mib(total)} unpacked, over the agent's ceiling of {mib(max_bytes)} "
                        "(raise --max-bytes if the device has room)")
    return members, problems


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, sha: str, into: Path) -> str | None:
    """Stream one member to disk, hashing as it goes (never more than a chunk in memory); a problem or None."""
    target, digest, size = into / info.filename, hashlib.sha256(), 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as src, open(target, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                size += len(chunk)
                if size > info.file_size:  # zipfile stops there itself; a second guard costs nothing
                    raise ValueError(f"more than the {info.file_size:,} bytes its header declares")
                digest.update(chunk)
                dst.write(chunk)
    except (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile, zlib.error) as exc:
        if target.is_file():  # a partial file never stays behind
            target.unlink()
        return f"{info.filename}: cannot be unpacked ({exc})"
    if digest.hexdigest() != sha:
        target.unlink()
        return f"{info.filename}: altered (sha256 differs from {BUNDLE_MANIFEST})"
    return None


def _unpack(archive: zipfile.ZipFile, bundle: Path, into: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Extract exactly the files the bundle's manifest lists, each checked against its size and sha256;
    refuse (every problem at once) a missing, extra, duplicate, oversized or altered file, a link, a
    name leaving the directory, or a file that is also a folder. Sizes are checked before reading."""
    listed = read_listing(archive, bundle)
    members, problems = _check_members(archive, listed, max_bytes)
    if not problems:
        problems = [p for name, info in members.items() if (p := _extract(archive, info, listed[name][0], into))]
    if problems:
        raise AgentError(f"{bundle}: refused, {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))


def measure_bundle(bundle: Path, threads: int, processes: int, timing: Timing, target: str, progress=None,
                   max_bytes: int = DEFAULT_MAX_BYTES) -> dict:
    try:
        archive = zipfile.ZipFile(bundle)
    except (zipfile.BadZipFile, OSError) as exc:
        raise AgentError(f"{bundle}: not a readable zip bundle ({exc})") from exc
    with temp_dir() as tmp, archive:
        root = Path(tmp)
        _unpack(archive, bundle, root, max_bytes)
        eval_path = next(root.rglob("eval.npz"), None)
        models = sorted(p for p in root.rglob("*") if p.suffix in RUNNERS)
        return measure_files(models, eval_path, threads, processes, timing, target, progress, max_bytes)


def _write(text: str, output: Path | None) -> None:
    if output is None:
        print(text)
        return
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, output)


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=Path, nargs="+", metavar="MODEL",
                        help=".tflite/.onnx files (a sidecar .json beside each is read) or one bundle .zip")
    parser.add_argument("--eval", type=Path, help="eval.npz (x float32 NCHW, y int64) for accuracy")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--processes", type=int, default=5, help="fresh processes per model (default 5)")
    parser.add_argument("--target", default="local", help="target name recorded in the results")
    parser.add_argument("--warmup", type=int, default=Timing.warmup, help="runs before timing, per process")
    parser.add_argument("--min-runs", type=int, default=Timing.min_runs, help="timed runs at least, per process")
    parser.add_argument("--min-seconds", type=float, default=Timing.min_seconds, help="timing at least, per process")
    parser.add_argument("--max-bytes", type=_size_arg, default=DEFAULT_MAX_BYTES, metavar="SIZE",
                        help="the most a bundle may unpack and one model or eval set may hold, decompressed "
                             "(default 512M; e.g. 2G)")
    parser.add_argument("-o", "--output", type=Path, help="write the JSON here (default: stdout)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one process, one model
    parser.add_argument("--accuracy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    timing = Timing(args.warmup, args.min_runs, args.min_seconds)
    if args.processes < 1 or args.threads < 1:
        parser.error("--processes and --threads must be >= 1")

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
    if not args.worker:
        sweep_stale_temp_dirs()
    try:
        if args.worker:
            die_with_parent()
            result = worker(args.models[0], args.eval, args.threads, timing, args.accuracy, args.max_bytes)
        elif args.models[0].suffix == ".zip":
            result = measure_bundle(args.models[0], args.threads, args.processes, timing, args.target, progress,
                                    args.max_bytes)
        else:
            result = measure_files(args.models, args.eval, args.threads, args.processes, timing, args.target, progress,
                                   args.max_bytes)
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    for row in result.get("skipped", []):
        print(f"skipped {row['artifact']}: {row['reason']}", file=sys.stderr)
    _write(json.dumps(result, indent=None if args.worker else 2), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
