"""edgekd benchmark agent: latency, memory and accuracy of model files, each with its own runtime.

    python bench/agent.py MODEL... [--eval EVAL.npz] [--threads N] [--processes K] [-o RESULTS.json]
    python bench/agent.py BUNDLE.zip [-o RESULTS.json]        # every model in an `edgekd pack` bundle

Runs with Python >= 3.9, the standard library, numpy and one runtime: ai_edge_litert (or
tflite_runtime) for .tflite, onnxruntime for .onnx. It is one self-contained file so that it can be
copied to a Raspberry Pi or packed into a bundle. Exit codes: 0 ok, 2 bad input (unreadable model or
eval file), 3 the runtime is not installed.

Every model is timed in K fresh worker processes (`--worker`), scheduled round-robin over the models
so that a slow spell of the machine spreads over all of them. A process keeps its own median: the
spread of those medians, not the spread of samples inside one process, is the run-to-run noise a
later comparison must allow for (pyperf measures the same way).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SCHEMA = "edgekd.result/1"
BENCH_SCHEMA = "edgekd.bench/1"


class AgentError(Exception):
    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


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


def combine_latency(process_samples: list[list[float]]) -> dict:
    """One latency record from K processes: percentiles over all samples, each process weighted
    equally, plus every process's median and a 95 % interval of the median across processes."""
    per_process = min(len(s) for s in process_samples)
    pooled = np.concatenate([subsample(s, per_process) for s in process_samples])
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


def load_eval(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            x, y = f["x"].astype(np.float32), f["y"].astype(np.int64)
    except (OSError, ValueError, KeyError) as exc:
        raise AgentError(f"{path}: not an edgekd eval file with arrays x and y ({exc})") from exc
    if x.ndim != 4 or len(x) != len(y) or not len(x):
        raise AgentError(f"{path}: expected x of shape (N, C, H, W) and y of shape (N,); got {x.shape} and {y.shape}")
    return x, y


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


def time_runs(run, timing: Timing) -> tuple[float, list[float]]:
    """(first-call ms, per-call ms after warm-up)."""
    start = time.perf_counter()
    run()
    first_ms = (time.perf_counter() - start) * 1e3
    for _ in range(timing.warmup):
        run()
    samples: list[float] = []
    began = time.perf_counter()
    while len(samples) < timing.min_runs or time.perf_counter() - began < timing.min_seconds:
        t0 = time.perf_counter_ns()
        run()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        if time.perf_counter() - began > timing.max_seconds and len(samples) >= 10:
            break
    return first_ms, samples


def _layout(runner, sidecar: dict, sample_shape: tuple) -> str:
    """NHWC or NCHW: from the sidecar when there is one, else from the model's input shape."""
    if sidecar.get("input", {}).get("layout"):
        return sidecar["input"]["layout"]
    c, h, w = sample_shape
    return "nhwc" if tuple(runner.input_shape[1:]) == (h, w, c) and (h, w, c) != (c, h, w) else "nchw"


def worker(model: Path, eval_path: Path | None, threads: int, timing: Timing, with_accuracy: bool) -> dict:
    """Load and time one model in this process (and score it when asked): a worker record."""
    started = time.time()
    rss_before = status_mb("VmRSS") or peak_rss_mb()
    if model.suffix not in RUNNERS:
        raise AgentError(f"{model}: unknown model type {model.suffix!r}; expected one of {', '.join(RUNNERS)}")
    if not model.is_file():
        raise AgentError(f"{model}: no such file")
    sha = sha256_file(model)
    side_path = model.with_name(model.name + ".json")
    sidecar = json.loads(side_path.read_text()) if side_path.is_file() else {}
    x, y = load_eval(eval_path) if eval_path else (None, None)
    start = time.perf_counter()
    runner = RUNNERS[model.suffix](model, threads)
    init_ms = (time.perf_counter() - start) * 1e3
    if x is not None:
        if _layout(runner, sidecar, x.shape[1:]) == "nhwc":
            x = x.transpose(0, 2, 3, 1)
        sample = x[:1]
    else:
        shape = tuple(1 if d < 1 else d for d in runner.input_shape)
        sample = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    prepared = runner.prepare(sample)
    before = board_state()
    first_ms, samples = time_runs(lambda: runner.run(prepared), timing)
    after = board_state()
    peak = peak_rss_mb()  # before scoring: the memory of loading and running the model, not of the eval set
    record = {"artifact": sidecar.get("file", model.name), "sha256": sha, "runtime": runner.runtime,
              "runtime_version": runner.version, "threads": threads, "init_ms": init_ms, "first_ms": first_ms,
              "peak_rss_mb": peak, "rss_increase_mb": peak - rss_before, "samples_ms": samples,
              "board_before": before, "board_after": after}
    if with_accuracy and x is not None:
        record.update(accuracy=float((runner.predict(x).argmax(1) == y).mean()), n_eval=int(len(y)))
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


def run_process(command: list[str], timeout: float | None = None) -> dict:
    """Run one command that writes a JSON file given as `-o OUT`; its JSON, or AgentError with its
    last stderr line and its exit code (a runtime missing stays 3)."""
    with temp_dir() as tmp:
        out = Path(tmp) / "out.json"
        try:
            proc = subprocess.run([*command, "-o", str(out)], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AgentError(f"{' '.join(command[:3])}...: no result within {timeout:.0f} s", 1) from None
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            message = lines[-1].removeprefix("error: ") if lines else f"exit code {proc.returncode}"
            raise AgentError(message, proc.returncode if proc.returncode in (2, 3) else 1)
        return json.loads(out.read_text())


def merge(job: Job, target: str) -> dict:
    """The result record (schema edgekd.result/1) of one job from its worker records."""
    first = job.workers[0]
    shas = {w["sha256"] for w in job.workers}
    if len(shas) != 1:
        raise AgentError(f"{job.artifact}: the file changed while it was measured (sha256 {', '.join(sorted(shas))})")
    latency = combine_latency([w["samples_ms"] for w in job.workers])
    return {
        "schema": SCHEMA, "artifact": job.artifact, "target": target, "sha256": first["sha256"],
        "runtime": first["runtime"], "runtime_version": first["runtime_version"], "threads": first["threads"],
        "device": device_fingerprint(), "latency_ms": latency,
        "init_ms": float(np.median([w["init_ms"] for w in job.workers])),
        "first_ms": float(np.median([w["first_ms"] for w in job.workers])),
        "peak_rss_mb": max(w["peak_rss_mb"] for w in job.workers),
        "rss_increase_mb": max(w["rss_increase_mb"] for w in job.workers),
        "accuracy": first.get("accuracy"), "n_eval": first.get("n_eval", 0), "accuracy_on": "device",
        "started_at": min(w["started_at"] for w in job.workers), "ended_at": max(w["ended_at"] for w in job.workers),
        "thermal": thermal_summary(first.get("board_before", {}), job.workers[-1].get("board_after", {})),
        "samples_ms": subsample(np.concatenate([w["samples_ms"] for w in job.workers]), 5000),
    }


def run_jobs(jobs: list[Job], processes: int, target: str, progress=None, timeout: float | None = None) -> list[dict]:
    """Measure every job in `processes` rounds, one fresh process per job and round; accuracy in round 1.

    A job whose runtime is missing here (exit 3) is skipped with the reason and the others go on;
    use `skipped_rows(jobs)` for them. Any other failure raises AgentError.
    """
    for round_ in range(processes):
        for i, job in enumerate(jobs, 1):
            if job.skipped:
                continue
            if progress:
                progress(f"[round {round_ + 1}/{processes}, {i}/{len(jobs)}] {job.artifact}")
            try:
                job.workers.append(run_process([*job.command, *(["--accuracy"] if round_ == 0 else [])], timeout))
            except AgentError as exc:
                if exc.exit_code != 3:
                    raise
                job.skipped = str(exc)
    return [merge(job, target) for job in jobs if not job.skipped]


def skipped_rows(jobs: list[Job]) -> list[dict]:
    return [{"artifact": job.artifact, "reason": job.skipped} for job in jobs if job.skipped]


def worker_command(model: Path, eval_path: Path | None, threads: int, timing: Timing) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(model), "--threads", str(threads),
           *timing.args()]
    return cmd + (["--eval", str(eval_path)] if eval_path else [])


def model_job(model: Path, eval_path: Path | None, threads: int, timing: Timing) -> Job:
    """The job for one model file, named as its sidecar names it (export/student.onnx) or by its file name."""
    sidecar = model.with_name(model.name + ".json")
    artifact = json.loads(sidecar.read_text()).get("file", model.name) if sidecar.is_file() else model.name
    return Job(artifact, worker_command(model, eval_path, threads, timing))


def measure_files(models: list[Path], eval_path: Path | None, threads: int, processes: int, timing: Timing,
                  target: str, progress=None) -> dict:
    jobs = [model_job(model, eval_path, threads, timing) for model in models]
    results = run_jobs(jobs, processes, target, progress)
    skipped = skipped_rows(jobs)
    if skipped and not results:
        raise AgentError("nothing could be measured: " + "; ".join(f"{s['artifact']}: {s['reason']}" for s in skipped), 3)
    return {"schema": BENCH_SCHEMA, "target": target, "results": results, "skipped": skipped}


BUNDLE_MANIFEST = "bundle.json"  # {"schema": "edgekd.bundle/1", "files": {name: sha256}}


def _unpack(archive: zipfile.ZipFile, bundle: Path, into: Path) -> None:
    """Extract exactly the files the bundle's manifest lists, each checked against its sha256; refuse
    (every problem at once) a missing, extra or altered file, a link, or a name leaving the directory."""
    problems = []
    try:
        listed = json.loads(archive.read(BUNDLE_MANIFEST))["files"]
        assert isinstance(listed, dict) and all(isinstance(v, str) for v in listed.values())
    except (KeyError, ValueError, AssertionError, TypeError):
        raise AgentError(f"{bundle}: no valid {BUNDLE_MANIFEST} inside; make the bundle with `edgekd pack`") from None
    members = {}
    for info in archive.infolist():
        name = info.filename
        if info.is_dir() or name == BUNDLE_MANIFEST:
            continue
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            problems.append(f"{name}: a symbolic link; bundles hold plain files only")
        elif name.startswith("/") or ".." in Path(name).parts or "\\" in name:
            problems.append(f"{name}: a path outside the bundle's directory")
        elif name not in listed:
            problems.append(f"{name}: not listed in {BUNDLE_MANIFEST} (an extra file)")
        else:
            members[name] = info
    problems += [f"{name}: listed in {BUNDLE_MANIFEST} but missing" for name in listed if name not in members
                 and not any(p.startswith(name + ":") for p in problems)]
    for name, info in members.items():
        data = archive.read(info)
        if hashlib.sha256(data).hexdigest() != listed[name]:
            problems.append(f"{name}: altered (sha256 differs from {BUNDLE_MANIFEST})")
            continue
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    if problems:
        raise AgentError(f"{bundle}: refused, {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))


def measure_bundle(bundle: Path, threads: int, processes: int, timing: Timing, target: str, progress=None) -> dict:
    try:
        archive = zipfile.ZipFile(bundle)
    except (zipfile.BadZipFile, OSError) as exc:
        raise AgentError(f"{bundle}: not a readable zip bundle ({exc})") from exc
    with temp_dir() as tmp, archive:
        root = Path(tmp)
        _unpack(archive, bundle, root)
        eval_path = next(root.rglob("eval.npz"), None)
        models = sorted(p for p in root.rglob("*") if p.suffix in RUNNERS)
        return measure_files(models, eval_path, threads, processes, timing, target, progress)


def _write(text: str, output: Path | None) -> None:
    if output is None:
        print(text)
        return
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, output)


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
            result = worker(args.models[0], args.eval, args.threads, timing, args.accuracy)
        elif args.models[0].suffix == ".zip":
            result = measure_bundle(args.models[0], args.threads, args.processes, timing, args.target, progress)
        else:
            result = measure_files(args.models, args.eval, args.threads, args.processes, timing, args.target, progress)
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    for row in result.get("skipped", []):
        print(f"skipped {row['artifact']}: {row['reason']}", file=sys.stderr)
    _write(json.dumps(result, indent=None if args.worker else 2), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
