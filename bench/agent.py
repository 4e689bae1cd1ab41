"""edgekd benchmark agent: latency, memory and accuracy of one model file with its own runtime.

    python bench/agent.py MODEL [--eval EVAL.npz] [--threads N] [-o RESULT.json]
    python bench/agent.py BUNDLE.zip [-o RESULTS.json]     # every model in the bundle, each in a fresh process

Runs with Python >= 3.9, the standard library, numpy and one runtime: ai_edge_litert (or
tflite_runtime) for .tflite, onnxruntime for .onnx. It is one self-contained file so that it can be
copied to a Raspberry Pi or packed into a bundle. Exit codes: 0 ok, 2 bad input (unreadable model or
eval file), 3 the runtime is not installed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

SCHEMA = "edgekd.result/1"


class AgentError(Exception):
    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


# ----------------------------------------------------------------------------- statistics

def summarize(samples_ms: list[float] | np.ndarray, resamples: int = 1000, seed: int = 0) -> dict:
    """Percentiles (linear interpolation), mean, std, min, max, n and a bootstrap 95 % CI of the median."""
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
    rng = np.random.default_rng(seed)
    # resample a few rows at a time: a second of 4 µs runs is 250k samples, and a full
    # (resamples x n) matrix would add gigabytes to the peak memory this agent reports
    chunk = max(1, 500_000 // len(a))
    boot = np.concatenate([np.median(a[rng.integers(0, len(a), size=(min(chunk, resamples - i), len(a)))], axis=1)
                           for i in range(0, resamples, chunk)])
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"p50": float(p50), "p90": float(p90), "p95": float(p95), "p99": float(p99), "mean": float(a.mean()),
            "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "min": float(a.min()), "max": float(a.max()),
            "n": int(len(a)), "p50_ci95": [float(lo), float(hi)]}


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - zero_point) * np.float32(scale)


# ----------------------------------------------------------------------------- memory and device

def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """VmHWM (Linux); elsewhere ru_maxrss (kB on Linux, bytes on macOS)."""
    hwm = _status_mb("VmHWM")
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


# ----------------------------------------------------------------------------- runtimes

class TFLiteRunner:
    """One LiteRT interpreter; quantizes int8 inputs and dequantizes int8 outputs with the file's own params."""

    def __init__(self, path: Path, threads: int):
        try:
            from ai_edge_litert.interpreter import Interpreter
            import ai_edge_litert as pkg
            self.runtime = "ai_edge_litert"
        except ImportError:
            try:
                from tflite_runtime.interpreter import Interpreter
                import tflite_runtime as pkg
                self.runtime = "tflite_runtime"
            except ImportError:
                raise AgentError("no TFLite runtime: pip install ai-edge-litert (or tflite-runtime on older "
                                 "Raspberry Pi OS images)", 3) from None
        self.version = getattr(pkg, "__version__", "unknown")
        try:
            self.interp = Interpreter(model_path=str(path), num_threads=threads)
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
    def __init__(self, path: Path, threads: int):
        try:
            import onnxruntime as ort
        except ImportError:
            raise AgentError("no ONNX runtime: pip install onnxruntime", 3) from None
        self.runtime, self.version = "onnxruntime", ort.__version__
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
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


# ----------------------------------------------------------------------------- measuring one model

def _layout(runner, sidecar: dict, sample_shape: tuple) -> str:
    """NHWC or NCHW: from the sidecar when there is one, else from the model's input shape."""
    if sidecar.get("input", {}).get("layout"):
        return sidecar["input"]["layout"]
    c, h, w = sample_shape
    return "nhwc" if tuple(runner.input_shape[1:]) == (h, w, c) and (h, w, c) != (c, h, w) else "nchw"


def time_runs(run, warmup: int, min_runs: int, min_seconds: float, max_seconds: float = 30.0) -> tuple[float, list[float]]:
    """(first-call ms, per-call ms after warm-up): timed until both min_runs and min_seconds are reached."""
    start = time.perf_counter()
    run()
    first_ms = (time.perf_counter() - start) * 1e3
    for _ in range(warmup):
        run()
    samples: list[float] = []
    began = time.perf_counter()
    while len(samples) < min_runs or time.perf_counter() - began < min_seconds:
        t0 = time.perf_counter_ns()
        run()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        if time.perf_counter() - began > max_seconds and len(samples) >= 10:
            break
    return first_ms, samples


def subsample(samples: list[float], keep: int = 5000) -> list[float]:
    """At most about `keep` samples, evenly spaced over the run (not the first ones), so a later
    comparison sees the whole run's noise."""
    return [round(s, 6) for s in samples[::max(1, len(samples) // keep)]]


def load_eval(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            x, y = f["x"].astype(np.float32), f["y"].astype(np.int64)
    except (OSError, ValueError, KeyError) as exc:
        raise AgentError(f"{path}: not an edgekd eval file with arrays x and y ({exc})") from exc
    if x.ndim != 4 or len(x) != len(y) or not len(x):
        raise AgentError(f"{path}: expected x of shape (N, C, H, W) and y of shape (N,); got {x.shape} and {y.shape}")
    return x, y


def measure(model: Path, eval_path: Path | None, threads: int = 1, warmup: int = 20, min_runs: int = 200,
            min_seconds: float = 1.0, max_seconds: float = 30.0, target: str = "local") -> dict:
    """Load, time and score one model in this process; return the result record (schema edgekd.result/1)."""
    rss_before = _status_mb("VmRSS") or peak_rss_mb()
    if model.suffix not in RUNNERS:
        raise AgentError(f"{model}: unknown model type {model.suffix!r}; expected one of {', '.join(RUNNERS)}")
    if not model.is_file():
        raise AgentError(f"{model}: no such file")
    side_path = model.with_name(model.name + ".json")
    sidecar = json.loads(side_path.read_text()) if side_path.is_file() else {}
    x, y = load_eval(eval_path) if eval_path else (None, None)
    start = time.perf_counter()
    runner = RUNNERS[model.suffix](model, threads)
    init_ms = (time.perf_counter() - start) * 1e3
    if x is not None:
        layout = _layout(runner, sidecar, x.shape[1:])
        if layout == "nhwc":
            x = x.transpose(0, 2, 3, 1)
        sample = x[:1]
    else:
        shape = tuple(1 if d < 1 else d for d in runner.input_shape)
        sample = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    prepared = runner.prepare(sample)
    first_ms, samples = time_runs(lambda: runner.run(prepared), warmup, min_runs, min_seconds, max_seconds)
    accuracy = float((runner.predict(x).argmax(1) == y).mean()) if x is not None else None
    latency = summarize(samples)
    peak = peak_rss_mb()  # last: the process's true high-water mark, as an outside observer would read it
    return {
        "schema": SCHEMA, "artifact": sidecar.get("file", model.name), "target": target,
        "runtime": runner.runtime, "runtime_version": runner.version, "threads": threads,
        "device": device_fingerprint(), "latency_ms": latency, "init_ms": init_ms, "first_ms": first_ms,
        "peak_rss_mb": peak, "rss_increase_mb": peak - rss_before, "accuracy": accuracy,
        "n_eval": int(len(y)) if y is not None else 0, "samples_ms": subsample(samples),
    }


def measure_in_subprocess(model: Path, eval_path: Path | None, threads: int, target: str, extra: list[str]) -> dict:
    """Measure `model` in a fresh interpreter so that no other model's memory counts against it."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), str(model), "--threads", str(threads),
               "--target", target, "-o", str(out), *extra]
        if eval_path:
            cmd += ["--eval", str(eval_path)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise AgentError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else
                             f"{model}: agent exited {proc.returncode}", proc.returncode)
        return json.loads(out.read_text())


def measure_bundle(bundle: Path, threads: int, target: str, extra: list[str]) -> dict:
    try:
        archive = zipfile.ZipFile(bundle)
    except (zipfile.BadZipFile, OSError) as exc:
        raise AgentError(f"{bundle}: not a readable zip bundle ({exc})") from exc
    with tempfile.TemporaryDirectory() as tmp, archive:
        archive.extractall(tmp)
        root = Path(tmp)
        eval_path = next(root.rglob("eval.npz"), None)
        models = sorted(p for p in root.rglob("*") if p.suffix in RUNNERS)
        results = []
        for i, model in enumerate(models, 1):
            print(f"[{i}/{len(models)}] {model.relative_to(root)}", file=sys.stderr, flush=True)
            results.append(measure_in_subprocess(model, eval_path, threads, target, extra))
    return {"schema": "edgekd.bench/1", "target": target, "results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a .tflite/.onnx file (sidecar .json beside it is read) or a bundle .zip")
    parser.add_argument("--eval", type=Path, help="eval.npz (x float32 NCHW, y int64) for accuracy")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--target", default="local", help="target name recorded in the result")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--min-runs", type=int, default=200)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("-o", "--output", type=Path, help="write the JSON here (default: stdout)")
    args = parser.parse_args(argv)
    extra = ["--warmup", str(args.warmup), "--min-runs", str(args.min_runs), "--min-seconds", str(args.min_seconds)]
    try:
        if args.model.suffix == ".zip":
            result = measure_bundle(args.model, args.threads, args.target, extra)
        else:
            result = measure(args.model, args.eval, args.threads, args.warmup, args.min_runs, args.min_seconds,
                             target=args.target)
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    text = json.dumps(result, indent=2)
    if args.output:
        tmp = args.output.with_name(f".{args.output.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, args.output)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
