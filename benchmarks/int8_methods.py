"""int8 methods benchmark: per seed, PTQ alone against `export.int8_method = "auto"` (PTQ, then QAT where
PTQ's validation drop is not within the limit, then the per-layer fallback), on the test split;
`--method ptq` measures PTQ with the fallback instead.

    python benchmarks/int8_methods.py configs/mnist5k.toml --seeds 0 1 2 [--set KEY=VALUE ...]
    PYTHONPATH=benchmarks python benchmarks/int8_methods.py configs/digits.toml --set student.arch=ptq_models:MobileNetV1NoBN \
        --set 'student.kwargs={stem=4, channels=[8,16], act="relu", dw_kernel=5, stride=1}' --set student.train.epochs=60 \
        --set 'export.models=["student"]' --set 'export.formats=["tflite","tflite_int8","onnx","onnx_int8"]'

Each seed trains once (teacher, baseline, student), exports with PTQ alone (no fallback) and then
again with "auto" (only the export stage re-runs). Prints per seed and int8 file: the fp32 model's test
accuracy, PTQ's, the method auto kept and its accuracy, the QAT training seconds, the layers the
fallback kept in float and the export stage's seconds; then the mean drops per format.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from edgekd.errors import CheckFailed
from edgekd.pipeline.config import load_config
from edgekd.pipeline.run import run_pipeline


def _export(config: str, sets: list[str], run_dir: Path, method: str) -> tuple[dict[str, dict], float]:
    """The int8 sidecars after an export with `method` ("pure-ptq": PTQ without the fallback), and the seconds."""
    extra = ["export.int8_method=ptq", "export.int8_fallback=false"] if method == "pure-ptq" else [f"export.int8_method={method}"]
    cfg = load_config(Path(config), [*sets, *extra])
    start = time.perf_counter()
    try:
        run_pipeline(cfg, run_dir, until="export")
    except CheckFailed as exc:  # an int8 file beyond the limit: it is kept, and is what we measure
        print(f"  ({method}: {str(exc).splitlines()[0]})")
    seconds = time.perf_counter() - start
    return {p.name.removesuffix(".json"): json.loads(p.read_text())
            for p in sorted((run_dir / "export").glob("*.int8.*.json"))}, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--method", default="auto", choices=["auto", "qat", "ptq"],
                        help="the second export's int8_method (ptq: PTQ with the fallback)")
    parser.add_argument("--keep", type=Path, help="keep the run directories here (PTQ's int8 files in <seed>/ptq/)")
    args = parser.parse_args()
    drops: dict[str, dict[str, list[float]]] = {}
    print("seed file                    fp32     ptq  (drop)     auto  (drop)   method  QAT s  float layers  export s")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            run_dir = (args.keep or Path(tmp)) / f"seed{seed}"
            sets = [*args.set, f"run.seed={seed}"]
            ptq, _ = _export(args.config, sets, run_dir, "pure-ptq")
            (run_dir / "ptq").mkdir(exist_ok=True)
            for name in ptq:
                shutil.copy2(run_dir / "export" / name, run_dir / "ptq" / name)
            auto, seconds = _export(args.config, sets, run_dir, args.method)
            for name, side in auto.items():
                p = ptq[name]["parity"]
                a = side["parity"]
                attempts = side["quantization"]["attempts"]
                qat = sum(x["train_seconds"] for x in attempts)
                floats = next((x.get("float_layers") for x in attempts if x["method"] == side["int8_method"]), None)
                d = drops.setdefault(name, {"ptq": [], "auto": [], "qat_seconds": []})
                d["ptq"].append(p["reference_accuracy"] - p["accuracy"])
                d["auto"].append(a["reference_accuracy"] - a["accuracy"])
                d["qat_seconds"].append(qat)
                print(f"{seed:>4} {name:<22} {100 * a['reference_accuracy']:6.2f} {100 * p['accuracy']:7.2f} "
                      f"({100 * d['ptq'][-1]:+5.2f}) {100 * a['accuracy']:7.2f} ({100 * d['auto'][-1]:+5.2f}) "
                      f"{side['int8_method']:>7} {qat:6.1f}  {','.join(floats or []) or '-':<12} {seconds:7.1f}",
                      flush=True)
    print("\nmean over seeds (drop = fp32 - int8, points; positive is a loss):")
    for name, d in drops.items():
        print(f"  {name:<22} PTQ {100 * statistics.fmean(d['ptq']):+.2f}   auto {100 * statistics.fmean(d['auto']):+.2f}"
              f"   QAT seconds {statistics.fmean(d['qat_seconds']):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
