"""Fidelity, stability and cost of the agent (edgekd.bench.agent) against LiteRT's own benchmark tool, in one run.

    python benchmarks/agent_fidelity.py runs/mnist5k/export/teacher.tflite runs/mnist5k/export/teacher.int8.tflite \
        --eval runs/mnist5k/data/eval.npz --threads 1

For each .tflite file: the agent twice (each in a fresh process), then
`python -m ai_edge_litert.tools.benchmark_litert_model` with the same thread count. Prints the agent's
two p50s, their ratio (stability), the tool's median and the agent/tool ratio (fidelity), and the
agent's wall time for init + latency + accuracy (cost). The tool reports in steps of 0.01 ms, so
compare on models slower than about 0.05 ms.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AGENT = [sys.executable, "-m", "edgekd.bench.agent"]


def agent_p50(model: Path, eval_path: Path, threads: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        start = time.perf_counter()
        subprocess.run([*AGENT, str(model), "--eval", str(eval_path), "--threads", str(threads),
                        "-o", str(out)], check=True, capture_output=True)
        return json.loads(out.read_text())["results"][0]["latency_ms"]["p50"], time.perf_counter() - start


def tool_median(model: Path, threads: int, runs: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "lt.json"
        subprocess.run([sys.executable, "-m", "ai_edge_litert.tools.benchmark_litert_model", f"--model={model}",
                        f"--num_threads={threads}", f"--num_runs={runs}", "--warmup_runs=50", f"--result_json={out}"],
                       check=True, capture_output=True)
        return json.loads(out.read_text())["latency"]["median_ms"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--eval", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tool-runs", type=int, default=2000)
    args = parser.parse_args()
    for model in args.models:
        (a1, cost1), (a2, cost2) = agent_p50(model, args.eval, args.threads), agent_p50(model, args.eval, args.threads)
        tool = tool_median(model, args.threads, args.tool_runs)
        print(f"{model.name}: agent p50 {a1:.4f} / {a2:.4f} ms (run-to-run {max(a1, a2) / min(a1, a2) - 1:.1%}), "
              f"LiteRT tool median {tool:.2f} ms (agent/tool {a1 / tool:.2f}x), agent wall time {cost1:.1f} / {cost2:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
