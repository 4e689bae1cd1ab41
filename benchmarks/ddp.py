"""Training on 1 and on 2 CPU processes (torchrun, gloo): accuracy over seeds and throughput.

    python benchmarks/ddp.py configs/digits.toml --seeds 0 1 2
    python benchmarks/ddp.py configs/mnist5k.toml --seeds 0 1 2
    python benchmarks/ddp.py configs/digits.toml --seeds 0 1 2 --two-nodes   # as root, with `ip`

For each seed runs `edgekd run CONFIG --until student` once with one process and once with
`--nproc 2`, and prints teacher / baseline / student test accuracy, the seed-to-seed spread of each,
and training throughput (samples/s: training samples x epochs / training seconds, all ranks together).
`--two-nodes` adds a third run: two torchrun nodes of one process each, the second in its own network
namespace (c10d rendezvous and gloo over a veth pair; tests/helpers.py two_node_run), with the
wall time of each run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = ("teacher", "baseline", "student")


def run(config: str, seed: int, nproc: int, out: Path, extra: list[str]) -> tuple[dict, float]:
    """(metrics of the models, wall seconds) of one run; nproc 0 is two nodes of one process each."""
    overrides = [f"run.seed={seed}", "run.device=cpu", *extra]
    start = time.perf_counter()
    if nproc == 0:
        root = str(Path(__file__).resolve().parents[1])
        if root not in sys.path:
            sys.path.insert(0, root)
        from tests.helpers import two_node_run

        nodes = two_node_run(config, out, overrides, until="student")
        if nodes["returncodes"] != [0, 0]:
            raise SystemExit("two nodes failed:\n" + "\n".join(e[-2000:] for e in nodes["stderr"]))
        out = nodes["rank0_out"][0]
    else:
        subprocess.run([sys.executable, "-m", "edgekd.pipeline.cli", "-q", "run", config, "--out", str(out), "--until",
                        "student", "--nproc", str(nproc), *[a for s in overrides for a in ("--set", s)]],
                       check=True, capture_output=True)
    return json.loads((out / "metrics.json").read_text())["models"], time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--two-nodes", action="store_true", help="also two torchrun nodes in two network namespaces")
    args = parser.parse_args()
    rows: dict[int, list[dict]] = {1: [], 2: [], **({0: []} if args.two_nodes else {})}
    name = {1: "1 process", 2: "2 processes", 0: "2 nodes x 1 process"}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for nproc in rows:
                m, seconds = run(args.config, seed, nproc, Path(tmp) / f"s{seed}-p{nproc}", args.set)
                rows[nproc].append(m)
                rate = {k: m[k]["train_samples"] * m[k]["epochs"] / m[k]["train_seconds"] for k in MODELS}
                print(f"seed {seed}, {name[nproc]} ({seconds:.0f} s wall): " + ", ".join(
                    f"{k} {100 * m[k]['accuracy']:.2f}% ({rate[k]:,.0f} samples/s)" for k in MODELS), flush=True)
    for nproc, ms in rows.items():
        print(f"{name[nproc]} over {len(ms)} seeds: " + ", ".join(
            f"{k} {100 * statistics.fmean(m[k]['accuracy'] for m in ms):.2f} ± "
            f"{100 * (statistics.stdev(m[k]['accuracy'] for m in ms) if len(ms) > 1 else 0):.2f}% "
            f"(range {100 * min(m[k]['accuracy'] for m in ms):.2f}-{100 * max(m[k]['accuracy'] for m in ms):.2f}), "
            f"{statistics.median(m[k]['train_samples'] * m[k]['epochs'] / m[k]['train_seconds'] for m in ms):,.0f} "
            "samples/s" for k in MODELS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
