"""Where the time goes, per op, in each runtime's own profiler; and how far the profile's sum is from
the unprofiled p50 measured in the same process (profilers perturb what they time).

    python benchmarks/op_profile.py runs/mnist5k/export/student.onnx runs/mnist5k/export/student.int8.pte [--runs 500]

Each file is profiled in a fresh process, one thread:
- .onnx: onnxruntime's session profiling (`enable_profiling`): every kernel's time, per run.
- .pte: ExecuTorch's ETDump (`enable_etdump`), read with `executorch.devtools.Inspector`: the ops
  XNNPACK ran inside the delegate (its own profiler, 1 µs resolution), the delegate call and the
  ops left outside it.
- .tflite: LiteRT's Python API has no op profiler (its Interpreter has none, and
  `ai_edge_litert.tools.benchmark_litert_model` has no `--enable_op_profiling`); the C++
  `benchmark_model --enable_op_profiling` (the adb target's tool) has one.

Prints per file: p50 of plain single-sample runs, the profiled run's mean, the sum of the per-op
means, and the ops by time per run with their share.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def _timed(run, x, runs: int) -> float:
    """Median µs of `runs` single calls after 50 warm-up calls."""
    for _ in range(50):
        run(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


def profile_onnx(path: Path, runs: int) -> dict:
    import onnxruntime as ort

    def session(profile_dir: str | None):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
        if profile_dir:
            opts.enable_profiling, opts.profile_file_prefix = True, f"{profile_dir}/ort"
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    plain = session(None)
    meta = plain.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in meta.shape]).astype(np.float32)
    p50 = _timed(lambda v: plain.run(None, {meta.name: v}), x, runs)
    with tempfile.TemporaryDirectory() as tmp:
        prof = session(tmp)
        _timed(lambda v: prof.run(None, {meta.name: v}), x, runs)
        events = json.loads(Path(prof.end_profiling()).read_text())
    model_runs = [e["dur"] for e in events if e.get("name") == "model_run"]
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    n = len(model_runs)
    return {"profiler": f"onnxruntime {ort.__version__} session profiling", "p50_us": p50,
            "profiled_run_us": statistics.fmean(model_runs), "ops_us": {k: v / n for k, v in per_op.items()}}


def profile_pte(path: Path, runs: int) -> dict:
    import torch
    from executorch.extension.pybindings import _C

    plain = _C._load_for_executorch(str(path))
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(
        list(plain.method_meta("forward").input_tensor_meta(0).sizes())).astype(np.float32))
    p50 = _timed(lambda v: plain.forward((v,)), x, runs)
    traced = _C._load_for_executorch(str(path), enable_etdump=True, debug_buffer_size=0)
    _timed(lambda v: traced.forward((v,)), x, runs)
    with tempfile.TemporaryDirectory() as tmp:
        etdump = Path(tmp) / "run.etdp"
        traced.write_etdump_result_to_file(str(etdump))
        from executorch.devtools import Inspector

        frame = Inspector(etdump_path=str(etdump)).to_dataframe()
    execute = frame[frame["event_block_name"] == "Execute"]
    per_op: dict[str, float] = {}
    whole = delegate = None
    for _, row in execute.iterrows():
        mean_us = 1e3 * statistics.fmean(row["raw"])  # the Inspector gives ms
        name = row["event_name"]
        if name == "Method::execute":
            whole = mean_us
        elif name == "DELEGATE_CALL":
            delegate = mean_us
        else:
            per_op[name if row["is_delegated_op"] else f"{name} (not delegated)"] = mean_us
    return {"profiler": "ExecuTorch ETDump (XNNPACK's per-op events, 1 µs resolution)", "p50_us": p50,
            "profiled_run_us": whole, "delegate_call_us": delegate, "ops_us": per_op}


def profile_one(path: Path, runs: int) -> dict:
    if path.suffix == ".onnx":
        return profile_onnx(path, runs)
    if path.suffix == ".pte":
        return profile_pte(path, runs)
    return {"profiler": None, "why": "LiteRT's Python API has no op profiler; use benchmark_model --enable_op_profiling"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a worker: one file, JSON out
    args = parser.parse_args()
    if args.one:
        print(json.dumps(profile_one(args.files[0], args.runs)))
        return 0
    for path in args.files:
        proc = subprocess.run([sys.executable, __file__, "--one", "--runs", str(args.runs), str(path)],
                              capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
        if proc.returncode:
            print(f"{path.name}: failed\n{proc.stderr[-2000:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        if not r["profiler"]:
            print(f"\n{path.name}: no op profile ({r['why']})")
            continue
        ops = r["ops_us"]
        total = sum(ops.values())
        print(f"\n{path.name}: {r['profiler']}\n  p50 unprofiled {r['p50_us']:.1f} µs; profiled run mean "
              f"{r['profiled_run_us']:.1f} µs; sum of ops {total:.1f} µs ({total / r['p50_us']:.2f}× p50)"
              + (f"; delegate call {r['delegate_call_us']:.1f} µs" if r.get("delegate_call_us") else ""))
        for name, us in sorted(ops.items(), key=lambda kv: -kv[1])[:10]:
            print(f"    {us:8.2f} µs  {100 * us / total if total else 0:5.1f} %  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
