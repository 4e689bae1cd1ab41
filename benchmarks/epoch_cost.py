"""Cost of a distillation epoch vs a baseline (labels-only) epoch, and where a distillation epoch's time goes.

    python benchmarks/epoch_cost.py configs/mnist5k.toml --rounds 7

Builds the config's transfer set and a freshly initialised teacher (the cost of an epoch does not
depend on how good the teacher is), then alternates one baseline epoch and one distillation epoch of
the same student, `rounds` times, and prints the medians and their ratio. With `student.train.jitter`
the teacher labels every shifted batch, as in the student stage; without it its logits are cached.
Alternating keeps drifting machine load out of the ratio.

Then, over the batches of one epoch, the seconds of each part: shifting the batch, the teacher as
trained (eval mode, no_grad) and as the student stage runs it (`TeacherSignal`'s labeller: BatchNorm
folded, channels-last, inference mode), and the student's forward, backward and optimizer step.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

from edgekd.pipeline.config import load_config
from edgekd.pipeline.data import prepare
from edgekd.pipeline.layout import RunLayout
from edgekd.pipeline.stages.context import StageContext, new_model, transfer_set
from edgekd.pipeline.training.fit import fit, jitter
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
    augmented = cfg.student.train.jitter > 0
    signal = TeacherSignal(teacher, x, augmented=augmented)
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
    print(f"distill / baseline epoch cost: {med['distill'] / med['baseline']:.3f}x "
          f"(teacher {'labels every shifted batch' if augmented else 'logits cached'})")
    parts = [_breakdown(ctx, cfg, x, y, teacher, signal) for _ in range(args.rounds)]
    print("one epoch, median seconds per part: " +
          ", ".join(f"{k} {statistics.median(p[k] for p in parts):.3f}" for k in parts[0]))
    return 0


def _breakdown(ctx, cfg, x, y, teacher, signal) -> dict[str, float]:
    import torch.nn.functional as F

    student, _ = new_model(ctx, cfg.student)
    opt = torch.optim.Adam(student.parameters(), lr=cfg.student.train.lr)
    gen = torch.Generator().manual_seed(0)
    order, batch = torch.randperm(len(x), generator=gen), cfg.student.train.batch_size
    spent = dict.fromkeys(("shift", "teacher as trained", "teacher labeller", "student step"), 0.0)
    for start in range(0, len(x), batch):
        idx = order[start:start + batch]
        t0 = time.perf_counter()
        xb = jitter(x[idx], cfg.student.train.jitter, gen)
        t1 = time.perf_counter()
        with torch.no_grad():
            teacher(xb)
        t2 = time.perf_counter()
        logits = signal.batch(xb, idx).logits
        t3 = time.perf_counter()
        loss = F.kl_div(F.log_softmax(student(xb), 1), F.log_softmax(logits, 1), reduction="batchmean", log_target=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        t4 = time.perf_counter()
        for key, dt in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            spent[key] += dt
    return spent


if __name__ == "__main__":
    sys.exit(main())
