"""Transfer sets missing classes, and the bias correction (Hinton et al. 2015, section 3).

    python benchmarks/missing_classes.py configs/mnist5k.toml --seeds 0 1 2

Per seed: one teacher; a student distilled on all classes; students distilled without the 3s, with
and without the validation-chosen bias correction; students distilled on 7s and 8s only, with and
without it. Prints test errors (all, and on the omitted class) and the share of the class-3 accuracy
the corrected student recovers, against the student that saw every class.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgekd.pipeline.config import load_config
from edgekd.pipeline.layout import RunLayout
from edgekd.pipeline.run import run_pipeline
from edgekd.pipeline.training.checkpoint import load_checkpoint

VARIANTS = {"all": [], "omit3-none": ["distill.transfer.omit_classes=[3]", "distill.bias_correction='none'"],
            "omit3-auto": ["distill.transfer.omit_classes=[3]"],
            "only78-none": ["distill.transfer.only_classes=[7, 8]", "distill.bias_correction='none'"],
            "only78-auto": ["distill.transfer.only_classes=[7, 8]"]}


def errors(layout: RunLayout) -> tuple[int, np.ndarray]:
    model, _ = load_checkpoint(layout.checkpoint("student"))
    with np.load(layout.eval_set) as f:
        x, y = torch.from_numpy(f["x"]), f["y"]
    with torch.no_grad():
        wrong = model(x).argmax(1).numpy() != y
    return int(wrong.sum()), np.array([int(wrong[y == c].sum()) for c in range(10)]), np.bincount(y, minlength=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    recovered = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            root = Path(tmp) / f"seed{seed}"
            base = [*args.set, f"run.seed={seed}", "run.device=cpu"]
            run_pipeline(load_config(Path(args.config), base), root, until="quantize")
            found = {}
            for name, extra in VARIANTS.items():
                cfg = load_config(Path(args.config), [*base, *extra])
                summary = run_pipeline(cfg, root, variant=name, only=("student",))
                found[name] = (*errors(RunLayout(root, name)), summary.metrics["student"].get("bias_correction"))
            total3 = found["all"][2][3]
            acc3 = {k: 1 - v[1][3] / total3 for k, v in found.items()}
            recovered.append(acc3["omit3-auto"] / acc3["all"])
            shift = found["omit3-auto"][3]["shift"]
            print(f"seed {seed}: errors (on 3s of {total3}): all classes {found['all'][0]} ({found['all'][1][3]}); "
                  f"no 3s {found['omit3-none'][0]} ({found['omit3-none'][1][3]}); no 3s + bias {shift:+.2f}: "
                  f"{found['omit3-auto'][0]} ({found['omit3-auto'][1][3]}) -> class-3 accuracy recovered "
                  f"{recovered[-1]:.0%} of the all-classes student's. Only 7s and 8s: error "
                  f"{found['only78-none'][0] / 10:.1f}% -> {found['only78-auto'][0] / 10:.1f}% with bias "
                  f"{found['only78-auto'][3]['shift']:+.2f} on the other classes", flush=True)
    print(f"mean share of class-3 accuracy recovered: {statistics.fmean(recovered):.0%} over {len(recovered)} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
