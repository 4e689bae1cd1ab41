"""edgekd benchmark agent: latency, memory and accuracy of model files, each with its own runtime.

    python3 agent.pyz MODEL... [--eval EVAL.npz] [--threads N] [--processes K] [-o RESULTS.json]
    python3 agent.pyz BUNDLE.zip [-o RESULTS.json]        # every model in an `edgekd pack` bundle
    ... [--max-bytes 512M]   # the most a bundle unpacks, and one model or eval set holds (refused: exit 2)
    ... [--profile]          # and one more process per model records where its time goes, op by op
    python -m edgekd.bench.agent ...                      # the same, from an installed edgekd

Runs with Python >= 3.9, the standard library, numpy and one runtime: ai_edge_litert (or
tflite_runtime) for .tflite, onnxruntime for .onnx. agent.pyz is the agent as one file (a zipapp,
which `edgekd pack` puts in every bundle) so that it can be copied to a Raspberry Pi. Exit codes:
0 ok, 2 bad input (unreadable model or eval file, a bundle or file over `--max-bytes`), 3 the
runtime is not installed.

Every model is timed in K fresh worker processes (`--worker`), scheduled round-robin over the models
so that a slow spell of the machine spreads over all of them. A process keeps its own median: the
spread of those medians, not the spread of samples inside one process, is the run-to-run noise a
later comparison must allow for (pyperf measures the same way).
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from edgekd.bench.agent.bundle import measure_bundle
from edgekd.bench.agent.jobs import measure_files
from edgekd.bench.agent.limits import DEFAULT_MAX_BYTES, parse_size
from edgekd.bench.agent.processes import die_with_parent, sweep_stale_temp_dirs
from edgekd.bench.agent.worker import Timing, profile_worker, worker
from edgekd.errors import AgentError
from edgekd.fileio import write_text


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
    parser.add_argument("--profile", action="store_true",
                        help="after timing, record each model's op profile with its runtime's own profiler, in one "
                             "more process per model (never timed: profiling perturbs timing)")
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
            run_worker = profile_worker if args.profile else functools.partial(worker, with_accuracy=args.accuracy)
            result = run_worker(args.models[0], args.eval, args.threads, timing, max_bytes=args.max_bytes)
        elif args.models[0].suffix == ".zip":
            result = measure_bundle(args.models[0], args.threads, args.processes, timing, args.target, progress,
                                    args.max_bytes, args.profile)
        else:
            result = measure_files(args.models, args.eval, args.threads, args.processes, timing, args.target, progress,
                                   args.max_bytes, args.profile)
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    for row in result.get("skipped", []):
        print(f"skipped {row['artifact']}: {row['reason']}", file=sys.stderr)
    text = json.dumps(result, indent=None if args.worker else 2)
    if args.output is None:
        print(text)
    else:
        write_text(args.output, text)
    return 0
