"""Cost of a distillation epoch with cached teacher soft targets vs a baseline (labels-only) epoch.

    python benchmarks/epoch_cost.py configs/mnist5k.toml --rounds 7

Builds the config's transfer set, caches the soft targets of a freshly initialised teacher (the
cost of an epoch does not depend on how good the teacher is), then alternates one baseline epoch and
one distillation epoch of the same student, `rounds` times, and prints the medians and their ratio.
Alternating keeps drifting machine load out of the ratio.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

import torch

from edgekd.pipeline.config import load_config
from edgekd.pipeline.data import prepare
from edgekd.pipeline.layout import RunLayout
from edgekd.pipeline.stages.context import StageContext, new_model, transfer_set
from edgekd.pipeline.training.fit import fit
from edgekd.pipeline.training.losses import CrossEntropy, make_loss
from edgekd.pipeline.training.teacher_signal import TeacherSignal


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    cfg = load_config(Path(args.config), [*args.set, "run.device=cpu"])
    data = prepare(cfg.data, cfg.run.seed)
    ctx = StageContext(cfg, RunLayout(Path(".")), torch.device("cpu"), lambda: data)
    x, y = transfer_set(ctx)
    x_val, y_val = ctx.tensors("val")
    teacher, _ = new_model(ctx, cfg.teacher)
    one_epoch = dataclasses.replace(cfg.student.train, epochs=1)
    signal = TeacherSignal(teacher, x, augmented=False)
    losses = {"baseline": (CrossEntropy(), None), "distill": (make_loss(cfg.distill), signal)}
    seconds: dict[str, list[float]] = {k: [] for k in losses}
    for _ in range(args.rounds):
        for name, (loss_fn, teacher_signal) in losses.items():
            student, _ = new_model(ctx, cfg.student)
            result = fit(student, x=x, y=y, loss=loss_fn, teacher=teacher_signal, x_val=x_val, y_val=y_val,
                         cfg=one_epoch, seed=cfg.run.seed)
            seconds[name].append(result.epoch_seconds[0])
    med = {k: statistics.median(v) for k, v in seconds.items()}
    print(f"transfer set: {len(x)} samples; student {cfg.student.arch} {cfg.student.kwargs}; "
          f"{torch.get_num_threads()} threads; {args.rounds} rounds")
    for name in losses:
        print(f"{name:9s} epoch: median {med[name]:.4f} s  (min {min(seconds[name]):.4f}, max {max(seconds[name]):.4f})")
    print(f"distill / baseline epoch cost: {med['distill'] / med['baseline']:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
