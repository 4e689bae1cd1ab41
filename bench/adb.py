"""The adb target: an Android phone, measured with TFLite's own `benchmark_model` binary.

The user's binary and the .tflite files go to /data/local/tmp/edgekd-<id>/; the tool runs once per
process, thread count and delegate setting, and its output (both generations of the tool, see
`parse_benchmark_output`) becomes the usual result record; with `--profile`, one more run with
`--enable_op_profiling=true` gives the row its op profile (`parse_op_table`). The tool scores nothing,
so accuracy is measured on the host with the same file through LiteRT and marked `accuracy_on: "host"`.
"""
from __future__ import annotations

import re
import shlex
import shutil
import statistics
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from edgekd.bench.agent.jobs import SCHEMA, Job, worker_command
from edgekd.bench.agent.limits import Deadline
from edgekd.bench.agent.processes import run_process
from edgekd.bench.agent.stats import median_interval
from edgekd.bench.kinds import Kind
from edgekd.bench.targets import BenchOptions, Call, artifact_name, last_line
from edgekd.errors import AgentError
from edgekd.fileio import sha256_file

RUNTIME = "tflite benchmark_model"  # the runtime its rows name: it keeps per-process medians, no samples
_COUNT = re.compile(r"count=(\d+)((?:[ \t]+\w+=[-\d.e+]+)*)")  # one line: \s would run into the next
_PAIR = re.compile(r"(\w+)=([-\d.e+]+)")


def parse_benchmark_output(text: str) -> dict:
    """The numbers of one `benchmark_model` run (µs for times, MB for memory), from either generation:

    new: "count=1000 first=.. curr=.. min=.. max=.. avg=.. std=.. p5=.. median=.. p95=.." lines (warm-up,
         then timed), "Initialized session in 119.515ms.", "Inference timings in us: Init: .., First
         inference: .., ...", "Memory footprint delta from the start of the tool (MB): init=.. overall=..";
    old: count lines without percentiles, "Average inference timings in us: Warmup: .., Init: ..,
         Inference: ..", "Peak memory footprint (MB): init=.. overall=..".
    Either, with --report_peak_memory_footprint: "Overall peak memory footprint (MB) via periodic
    monitoring: X". `peak_rss_mb` is the best of these the run printed (see `peak_memory`), else None.
    """
    counts = []
    for m in _COUNT.finditer(text):
        values = {k: float(v) for k, v in _PAIR.findall(m.group(2))}
        counts.append({"count": int(m.group(1)), **values})
    if not counts:
        raise AgentError("benchmark_model printed no timing (no count= line); run it by hand to see why")
    out: dict = {"timed": counts[-1], "warmup": counts[0] if len(counts) > 1 else None}
    if m := re.search(r"Initialized session in ([\d.]+)ms", text):
        out["init_ms"] = float(m.group(1))
    elif m := re.search(r"Init: ([\d.]+)", text):
        out["init_ms"] = float(m.group(1)) / 1e3
    if m := re.search(r"First inference: ([\d.]+)", text):
        out["first_ms"] = float(m.group(1)) / 1e3
    elif out["warmup"] and "first" in out["warmup"]:
        out["first_ms"] = out["warmup"]["first"] / 1e3
    if m := re.search(r"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
                      r"init=([\d.]+) overall=([\d.]+)", text):
        out["memory_mb"] = {"init": float(m.group(1)), "overall": float(m.group(2))}
    if m := re.search(r"Overall peak memory footprint \(MB\) via periodic monitoring: ([\d.]+)", text):
        out["peak_memory_mb"] = float(m.group(1))
    if m := re.search(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \((\w+)\)[^,]*,? yielding (\d+) partitions",
                      text):
        out["delegated"] = {"nodes": int(m.group(1)), "of": int(m.group(2)), "delegate": m.group(3),
                            "partitions": int(m.group(4))}
    out["peak_rss_mb"], out["peak_rss_from"] = peak_memory(out, text)
    return out


def peak_memory(parsed: dict, text: str) -> tuple[float | None, str | None]:
    """(MB, which line) of the tool's peak memory: the periodic monitor (a sampled peak of the whole
    process) when printed, else the footprint's `overall` (the old tool calls it the peak; the new one
    measures it from the tool's start, which misses only the few MB the bare binary holds); None when
    the tool printed neither: an unmeasured peak must never read as 0 MB."""
    if parsed.get("peak_memory_mb") is not None:
        return parsed["peak_memory_mb"], "periodic monitoring"
    if "memory_mb" in parsed:
        delta = "Memory footprint delta from the start of the tool" in text
        return parsed["memory_mb"]["overall"], "footprint delta from the tool's start" if delta else "peak footprint"
    return None, None


def parse_op_table(text: str) -> list[dict]:
    """The ops of TFLite's op profile (`benchmark_model --enable_op_profiling=true`; LiteRT's profile
    summary prints the same tables): the "Run Order" table of the regular runs (benchmark_model prints
    one for its initialisation first), as {"name", "op", "us"} per node, µs per run. Columns are read
    from the table's header, so a tool without the [start] column parses too; ops inside a delegate
    ("Delegate/Convolution (NHWC, F32) IGEMM") are named by their kind, the rest "(not delegated)"."""
    regular = text.find("Operator-wise Profiling Info for Regular Benchmark Runs")
    lines = text[max(regular, 0):].splitlines()
    start = next((i for i, line in enumerate(lines) if "Run Order" in line), None)
    if start is None or start + 1 >= len(lines):
        raise AgentError("benchmark_model printed no op profile (no Run Order table); run it by hand with "
                         "--enable_op_profiling=true to see why")
    columns = re.findall(r"\[([^\]]+)\]", lines[start + 1])
    numbers = len(columns) - 2  # between [node type] and [Name]
    avg = columns.index("avg ms") - 1
    ops = []
    for line in lines[start + 2:]:
        tokens = line.split()
        if len(tokens) < numbers + 2:
            break
        kind, values, name = " ".join(tokens[:-1 - numbers]), tokens[-1 - numbers:-1], tokens[-1]
        try:
            us = 1e3 * float(values[avg])
        except ValueError:  # the table ended without a blank line
            break
        inside = kind.startswith("Delegate/")
        ops.append({"name": f"{kind.removeprefix('Delegate/')} {name}" + ("" if inside else " (not delegated)"),
                    "op": kind.removeprefix("Delegate/"), "us": us})
    return ops


def parse_devices(text: str) -> dict[str, str]:
    """serial -> state ("device", "unauthorized", "offline", ...) from `adb devices`."""
    rows = [ln.split() for ln in text.splitlines()[1:] if ln.strip() and not ln.startswith("*")]
    return {row[0]: row[1] for row in rows if len(row) >= 2}


def combine_runs(runs: list[dict]) -> dict:
    """One latency record (ms) from one benchmark_model run per process."""
    timed = [r["timed"] for r in runs]
    p50s = [t.get("median", t["avg"]) / 1e3 for t in timed]
    lo, hi, coverage = median_interval(p50s)
    p95s = [t["p95"] / 1e3 for t in timed if "p95" in t]
    return {"p50": statistics.median(p50s), "p90": None, "p95": statistics.median(p95s) if p95s else None, "p99": None,
            "mean": statistics.fmean(t["avg"] / 1e3 for t in timed), "std": statistics.fmean(t.get("std", 0) / 1e3 for t in timed),
            "min": min(t["min"] / 1e3 for t in timed), "max": max(t["max"] / 1e3 for t in timed),
            "n": sum(t["count"] for t in timed), "p50_ci95": [lo, hi], "p50_ci_coverage": round(coverage, 4),
            "process_p50": p50s, "processes": len(runs),
            "p50_from": "median" if all("median" in t for t in timed) else "avg (this benchmark_model prints no median)"}


@dataclass(frozen=True)
class ADBTargetConfig:
    kind: Literal["adb"] = "adb"
    serial: str = ""  # optional when one device is attached
    benchmark_binary: str = ""  # TFLite's benchmark_model for the phone's ABI
    use_xnnpack: tuple[bool, ...] = (True,)  # [true, false] measures with and without the delegate
    warmup_runs: int = 20
    num_runs: int = 200
    adb: str = "adb"
    threads: tuple[int, ...] = ()
    processes: int = 0
    timeout_s: float = 600.0


class ADBTarget:
    kind = "adb"
    shares_cpu = False

    def __init__(self, name: str, benchmark_binary: str, *, serial: str = "", options: BenchOptions = BenchOptions(),
                 use_xnnpack: tuple[bool, ...] = (True,), warmup_runs: int = 20, num_runs: int = 200, adb: str = "adb"):
        self.name, self.binary, self.serial, self.options = name, benchmark_binary, serial, options
        self.use_xnnpack, self.warmup_runs, self.num_runs, self.adb = use_xnnpack, warmup_runs, num_runs, adb
        self.remote_dir: str | None = None
        self.call = Call()
        self.deadline = Deadline(options.timeout_s)  # the fleet restarts it when this target's turn begins

    def _adb(self, *args: str, timeout: float | None = 120, limited: bool = True) -> str:
        cmd = [self.adb, *(["-s", self.serial] if self.serial else []), *args]
        proc = self.call(cmd, timeout=timeout, deadline=self.deadline if limited else None)
        if proc.returncode != 0:
            raise AgentError(f"target {self.name}: `{' '.join(cmd[:4])}` failed: {last_line(proc.stderr or proc.stdout)}", 1)
        return proc.stdout

    def _shell(self, command: str, timeout: float | None = 120, limited: bool = True) -> str:
        return self._adb("shell", command, timeout=timeout, limited=limited)

    def prepare(self) -> None:
        if shutil.which(self.adb) is None:
            raise AgentError(f"target {self.name}: no adb client; install Android platform-tools (Debian: apt install adb)", 3)
        if not Path(self.binary).is_file():
            raise AgentError(f"target {self.name}: benchmark_binary {self.binary!r} not found; download TFLite's "
                             "benchmark_model for your phone's ABI (android_aarch64_benchmark_model) and name it there", 3)
        devices = parse_devices(self.call([self.adb, "devices"], timeout=60, deadline=self.deadline).stdout)
        usable = [s for s, state in devices.items() if state == "device"]
        unauthorized = AgentError(f"target {self.name}: the device is unauthorized; unlock the phone and accept the USB "
                                  "debugging prompt, then run `adb devices` again", 3)
        if self.serial:
            if devices.get(self.serial) == "unauthorized":
                raise unauthorized
            if devices.get(self.serial) != "device":
                raise AgentError(f"target {self.name}: device {self.serial!r} is {devices.get(self.serial, 'not attached')}"
                                 f"; `adb devices` lists {devices or 'none'}", 3)
        else:
            if not usable and "unauthorized" in devices.values():
                raise unauthorized
            if not usable:
                raise AgentError(f"target {self.name}: no Android device attached (`adb devices` lists none); connect "
                                 "one with USB debugging enabled, or give its serial", 3)
            if len(usable) > 1:
                raise AgentError(f"target {self.name}: {len(usable)} devices attached ({', '.join(usable)}); set serial", 3)
            self.serial = usable[0]
        self.remote_dir = f"/data/local/tmp/edgekd-{uuid.uuid4().hex[:12]}"
        self._shell(f"mkdir -p {shlex.quote(self.remote_dir)}")
        self._adb("push", self.binary, f"{self.remote_dir}/benchmark_model")
        self._shell(f"chmod 755 {shlex.quote(self.remote_dir)}/benchmark_model")

    def run(self, files: list[Path], eval_path: Path, extra_jobs: list[Job] = (),
            progress: Callable[[str], None] | None = None) -> dict:
        o, results = self.options, []
        skipped = [{"artifact": artifact_name(f), "reason": "the adb target runs .tflite files with benchmark_model"}
                   for f in files if f.suffix != ".tflite"]
        for i, f in enumerate(f for f in files if f.suffix == ".tflite"):
            remote = f"{self.remote_dir}/m{i}.tflite"  # our own name: the user's file name never reaches the shell
            self._adb("push", str(f), remote)
            host = run_process([*worker_command(f, eval_path, 1, o.timing), "--accuracy"], deadline=self.deadline)
            for threads in o.threads:
                for xnnpack in self.use_xnnpack:
                    command = (f"{shlex.quote(self.remote_dir)}/benchmark_model --graph={shlex.quote(remote)} "
                               f"--num_threads={threads} --use_xnnpack={str(xnnpack).lower()} "
                               f"--warmup_runs={self.warmup_runs} --num_runs={self.num_runs}")
                    runs = [parse_benchmark_output(self._shell(f"{command} --report_peak_memory_footprint=true",
                                                               timeout=None)) for _ in range(o.processes)]
                    row = self._result(f, runs, threads, xnnpack, host)
                    if o.profile:  # its own run, after the timed ones: profiling perturbs timing
                        row["op_profile"] = self._profile(self._shell(f"{command} --enable_op_profiling=true",
                                                                      timeout=None), row)
                    results.append(row)
        return {"schema": "edgekd.bench/1", "target": self.name, "results": results, "skipped": skipped}

    def _result(self, model: Path, runs: list[dict], threads: int, xnnpack: bool, host: dict) -> dict:
        peaks = [r.get("peak_rss_mb") for r in runs]
        measured = [p for p in peaks if p is not None]
        scored = {k: host[k] for k in ("accuracy", "n_eval", "correct_bits") if k in host}
        return {"schema": SCHEMA, "artifact": artifact_name(model), "target": self.name, "sha256": sha256_file(model),
                "runtime": RUNTIME, "runtime_version": "unknown", "threads": threads,
                "delegate": "xnnpack" if xnnpack else "none", "delegated": runs[0].get("delegated"),
                "device": {"machine": "android", "system": "Android", "processor": "", "python": "", "serial": self.serial},
                "latency_ms": combine_runs(runs), "init_ms": statistics.median(r.get("init_ms", 0.0) for r in runs),
                "first_ms": statistics.median(r.get("first_ms", 0.0) for r in runs),
                # None (JSON null) when the tool printed no memory line: a budget must see "not measured"
                "peak_rss_mb": max(measured) if measured else None,
                "peak_rss_from": next((r["peak_rss_from"] for r in runs if r.get("peak_rss_from")), None),
                # the tool reports no runtime baseline, so neither it nor the model's part is known
                "runtime_rss_mb": None, "model_rss_mb": None, "rss_increase_mb": None,
                "process_peak_rss_mb": peaks, "process_runtime_rss_mb": None,
                **scored, "accuracy_on": "host",
                "accuracy_runtime": f"{host['runtime']} {host['runtime_version']} on the host",
                "samples_ms": []}  # the tool prints summaries, not samples

    def _profile(self, output: str, row: dict) -> dict:
        """The op profile record of one `benchmark_model --enable_op_profiling=true` run, beside the row's
        timed p50; its ops are means over the profiled run's timed iterations (avg ms, to 1 µs)."""
        timed = parse_benchmark_output(output)["timed"]
        ops = sorted(parse_op_table(output), key=lambda op: -op["us"])
        return {"profiler": "benchmark_model --enable_op_profiling (TFLite's op profiler: ms to 3 decimals)",
                "runs": timed["count"], "profiled_run_us": timed.get("median", timed["avg"]), "ops": ops,
                "p50_us": 1e3 * row["latency_ms"]["p50"], "ops_sum_us": sum(op["us"] for op in ops),
                "sha256": row["sha256"], "threads": row["threads"]}

    def cleanup(self) -> None:
        self.call.stop()
        if self.remote_dir:
            remote, self.remote_dir = self.remote_dir, None
            try:
                self._shell(f"rm -rf {shlex.quote(remote)}", timeout=30, limited=False)  # also after the deadline
            except AgentError:
                pass


def _check(where: str, t: ADBTargetConfig) -> list[str]:
    if not t.benchmark_binary:
        return [f"{where}: kind 'adb' needs benchmark_binary, the path of TFLite's benchmark_model for the phone"]
    return []


def _build(name: str, t: ADBTargetConfig, options: BenchOptions) -> ADBTarget:
    return ADBTarget(name, t.benchmark_binary, serial=t.serial, options=options, use_xnnpack=t.use_xnnpack,
                     warmup_runs=t.warmup_runs, num_runs=t.num_runs, adb=t.adb)


KIND = Kind(ADBTargetConfig, _build, _check)
