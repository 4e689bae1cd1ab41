"""How temperature changes the student (Hinton et al. 2015: with >= 300 hidden units all T > 8 gave
similar results; with 30 units T = 2.5-4 was best), on mnist5k with 2x300 and 2x30 MLP students.

    python benchmarks/temperature.py configs/mnist5k.toml --seeds 3 --jobs 2

Runs `edgekd sweep` twice (one teacher each run directory, a student per T and seed, alpha fixed),
without jittered copies of the transfer set (as in the paper), and prints each curve.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

TEMPERATURES = "1,2,4,8,20"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--alpha", default="0.9")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for hidden in ("[300,300]", "[30,30]"):
            out = Path(tmp) / hidden.strip("[]").replace(",", "x")
            cmd = [sys.executable, "-m", "edgekd.pipeline.cli", "-q", "sweep", args.config, "--out", str(out),
                   "--seeds", str(args.seeds), "--jobs", str(args.jobs),
                   "--set", f"distill.temperature={TEMPERATURES}", "--set", f"distill.alpha={args.alpha}",
                   "--set", "student.arch='mlp'", "--set", f"student.kwargs={{hidden={hidden}}}",
                   "--set", "distill.transfer_copies=0", "--set", "student.train.epochs=60",
                   "--set", "student.train.batch_size=128", "--set", "student.train.lr=0.001", "--set", "run.device=cpu"]
            subprocess.run(cmd, check=True, capture_output=True)
            summary = json.loads((out / "sweep.json").read_text())
            points = [(float(p["values"]["distill.temperature"]), p["mean"], p["std"]) for p in summary["points"]]
            best = max(points, key=lambda p: p[1])
            print(f"MLP {hidden}: " + ", ".join(f"T={t:g} {100 * m:.2f}±{100 * s:.2f}%" for t, m, s in points) +
                  f"; best T={best[0]:g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
