"""PyTorch eager reference: one worker process of the agent's protocol, for a checkpoint.

    python -m edgekd.pipeline.eager RUN_DIR/student.pt --eval RUN_DIR/data/eval.npz [--threads N] [--accuracy] -o OUT.json

It reuses the agent's timing loop and memory readings, and the agent's scheduler runs it K times
beside the exported files, so the eager rows compare like for like.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from edgekd.bench.agent.device import board_state, peak_rss_mb
from edgekd.bench.agent.evalset import accuracy_fields, load_eval
from edgekd.bench.agent.processes import die_with_parent
from edgekd.bench.agent.worker import Samples, Timing, time_into
from edgekd.errors import EdgekdError
from edgekd.fileio import sha256_file


def worker_command(ckpt: Path, eval_path: Path, threads: int, timing: Timing) -> list[str]:
    return [sys.executable, "-m", "edgekd.pipeline.eager", str(ckpt), "--eval", str(eval_path), "--threads", str(threads),
            *timing.args()]


def eager_worker(ckpt: Path, eval_path: Path, threads: int, timing: Timing, with_accuracy: bool) -> dict:
    """One worker record like the agent's: `runtime_rss_mb` is this process's peak once torch is imported,
    the eval set loaded and a throw-away layer run (what any PyTorch model pays), `peak_rss_mb` its
    peak after loading and timing the checkpoint."""
    started = time.time()
    import torch

    from edgekd.pipeline.training.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    sha = sha256_file(ckpt)
    x, y = load_eval(eval_path)
    samples = Samples()  # before the baseline: recording samples must not count as the model's memory
    with torch.inference_mode():
        torch.nn.Linear(4, 4)(torch.ones(1, 4))  # the no-op run: torch's allocator and thread pool up
    baseline = peak_rss_mb()
    start = time.perf_counter()
    model, _ = load_checkpoint(ckpt)
    init_ms = (time.perf_counter() - start) * 1e3
    sample = torch.from_numpy(x[:1])
    with torch.inference_mode():
        before = board_state()
        first_ms = time_into(lambda: model(sample), timing, samples)
        after = board_state()
        peak = peak_rss_mb()
        record = {"artifact": ckpt.name, "sha256": sha, "runtime": "torch", "runtime_version": torch.__version__,
                  "threads": threads, "init_ms": init_ms, "first_ms": first_ms, "peak_rss_mb": peak,
                  "runtime_rss_mb": baseline, "runtime_rss_from": "torch imported, eval set loaded, a layer run",
                  "samples_ms": samples.values(), "board_before": before, "board_after": after}
        if with_accuracy:
            pred = torch.cat([model(torch.from_numpy(x[i:i + 256])) for i in range(0, len(x), 256)]).argmax(1).numpy()
            record.update(accuracy_fields(pred, y))
    return {**record, "started_at": started, "ended_at": time.time()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--eval", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=Timing.warmup)
    parser.add_argument("--min-runs", type=int, default=Timing.min_runs)
    parser.add_argument("--min-seconds", type=float, default=Timing.min_seconds)
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    timing = Timing(args.warmup, args.min_runs, args.min_seconds)
    die_with_parent()
    try:
        result = eager_worker(args.checkpoint, args.eval, args.threads, timing, args.accuracy)
    except EdgekdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    args.output.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
