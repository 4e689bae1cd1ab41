"""PyTorch eager reference: the same measurement as bench/agent.py, for a checkpoint, in its own process.

    python -m pipeline.eager RUN_DIR/student.pt --eval RUN_DIR/data/eval.npz [--threads N] -o RESULT.json

It reuses the agent's statistics and memory readings so the eager rows compare like for like.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.agent import _status_mb, device_fingerprint, load_eval, peak_rss_mb, subsample, summarize, time_runs


def measure_checkpoint(ckpt: Path, eval_path: Path, threads: int, warmup: int = 20, min_runs: int = 200,
                       min_seconds: float = 1.0) -> dict:
    rss_before = _status_mb("VmRSS") or peak_rss_mb()
    import torch

    from pipeline.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    x, y = load_eval(eval_path)
    start = time.perf_counter()
    model, _ = load_checkpoint(ckpt)
    init_ms = (time.perf_counter() - start) * 1e3
    sample = torch.from_numpy(x[:1])
    with torch.inference_mode():
        first_ms, samples = time_runs(lambda: model(sample), warmup, min_runs, min_seconds)
        pred = torch.cat([model(torch.from_numpy(x[i:i + 256])) for i in range(0, len(x), 256)]).argmax(1).numpy()
    latency = summarize(samples)
    peak = peak_rss_mb()  # last, as in the agent
    return {"schema": "edgekd.result/1", "artifact": ckpt.name, "target": "local", "runtime": "torch",
            "runtime_version": torch.__version__, "threads": threads, "device": device_fingerprint(),
            "latency_ms": latency, "init_ms": init_ms, "first_ms": first_ms, "peak_rss_mb": peak,
            "rss_increase_mb": peak - rss_before, "accuracy": float((pred == y).mean()), "n_eval": int(len(y)),
            "samples_ms": subsample(samples)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--eval", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-runs", type=int, default=200)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    result = measure_checkpoint(args.checkpoint, args.eval, args.threads, min_runs=args.min_runs,
                                min_seconds=args.min_seconds)
    args.output.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
