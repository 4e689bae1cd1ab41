"""Training throughput with the splits held as float32 tensors and with them streamed batch by batch.

    python benchmarks/stream_throughput.py configs/digits.toml
    python benchmarks/stream_throughput.py configs/mnist5k.toml --set student.train.epochs=30

Runs `edgekd run CONFIG --until student` with `data.stream = false`, then `true`, then both again in
that order (so that a drift of the machine's speed falls on both), and prints for each model the median
epoch time of each mode, the streamed/held ratio (per pair, and the median of both pairs), and whether
the checkpoints are the same bytes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MODELS = ("teacher", "baseline", "student")


def run(config: str, stream: bool, out: Path, extra: list[str]) -> dict:
    overrides = [f"data.stream={str(stream).lower()}", "run.device=cpu", *extra]
    subprocess.run([sys.executable, "-m", "edgekd.pipeline.cli", "-q", "run", config, "--out", str(out), "--until",
                    "student", *[a for o in overrides for a in ("--set", o)]], check=True)
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    return {m: {"epoch_s": stages[m]["metrics"]["epoch_seconds_median"], "accuracy": stages[m]["metrics"]["accuracy"],
                "sha256": hashlib.sha256((out / f"{m}.pt").read_bytes()).hexdigest()} for m in MODELS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {(stream, k): run(args.config, stream, Path(tmp) / f"{stream}-{k}", args.overrides)
                   for k in range(2) for stream in (False, True)}
    print(f"{'model':<9} {'held s/epoch':>13} {'streamed s/epoch':>17} {'ratio per pair':>16} {'median':>7}  same bytes")
    for m in MODELS:
        held = [results[False, k][m]["epoch_s"] for k in range(2)]
        streamed = [results[True, k][m]["epoch_s"] for k in range(2)]
        ratios = [s / h for s, h in zip(streamed, held)]
        same = len({r[m]["sha256"] for r in results.values()}) == 1
        print(f"{m:<9} {statistics.median(held):>13.4f} {statistics.median(streamed):>17.4f} "
              f"{' '.join(f'{r:.3f}' for r in ratios):>16} {statistics.median(ratios):>7.3f}  {same} "
              f"(accuracy {100 * results[True, 0][m]['accuracy']:.2f} %)")


if __name__ == "__main__":
    main()
