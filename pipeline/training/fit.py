"""The supervised training loop shared by teacher, baseline and distilled student.

Batches are drawn by index from a tensor on the device or, for large data, from a Streamed view that
reads and normalises just those rows (pipeline.training.batches): for datasets of this size that is
several times faster than a DataLoader, and every batch is reproducible from the seed.
After every epoch the whole training state (weights, optimizer, schedule, random generators, best
epoch so far) is written atomically to a resume file, so an interrupted stage continues at the
epoch it was in and ends with the weights an uninterrupted run would have.
"""
from __future__ import annotations

import copy
import io
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from edgekd.errors import CheckFailed, MissingDependency
from edgekd.fileio import write_bytes
from edgekd.pipeline.config import TrainConfig
from edgekd.pipeline import interrupt
from edgekd.pipeline.progress import SilentProgress, TrainProgress
from edgekd.pipeline.training.batches import Streamed, draw_offsets, rows_per_batch, shift_images
from edgekd.pipeline.training.hints import HintLoss, Tap, build_hints
from edgekd.pipeline.training.mixing import mix, mixed_loss
from edgekd.pipeline.training.teacher_signal import TeacherSignal

if TYPE_CHECKING:
    from edgekd.pipeline.distributed import Distributed

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    epochs: int
    best_epoch: int
    val_accuracy: float
    history: list[dict] = field(default_factory=list)
    resumed_from: int = 0  # the epoch an interrupted run had finished, 0 when trained from the start
    facts: dict = field(default_factory=dict)  # the loss's parameters, the teacher signal's and hints' facts

    @property
    def epoch_seconds(self) -> list[float]:
        return [h["seconds"] for h in self.history]


@dataclass(frozen=True)
class Resume:
    """Where to keep the per-epoch state, and the key (config and input hashes) it must match."""

    path: Path
    key: str


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MissingDependency("run.device = 'cuda' but torch sees no CUDA device (torch "
                                f"{torch.__version__}); install a CUDA build of torch or set run.device = 'cpu'")
    return torch.device(name)


def jitter(x: Tensor, max_shift: int, generator: torch.Generator, mode: str = "replicate") -> Tensor:
    """Shift every image by its own random (dy, dx) in [-max_shift, max_shift], edges replicated (or,
    with mode "constant", filled with 0: the train mean after normalisation)."""
    if max_shift == 0:
        return x
    return shift_images(x, max_shift, draw_offsets(len(x), max_shift, generator), mode)


def augment(x: Tensor, cfg: TrainConfig, generator: torch.Generator) -> Tensor:
    """The training view of a batch, drawn per image from `generator`: jitter, then a random crop of
    the zero-padded image (CIFAR's pad-and-crop), then a horizontal flip of half the images. The
    teacher is shown this same view."""
    x = jitter(x, cfg.jitter, generator)
    x = jitter(x, cfg.crop_padding, generator, mode="constant")
    if cfg.flip:
        flipped = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
        x = torch.where(flipped[:, None, None, None], x.flip(-1), x)
    return x


@torch.no_grad()
def predict(model: nn.Module, x: Tensor | Streamed, batch_size: int = 1024) -> Tensor:
    """Logits for every row of `x`, in eval mode, on x's device."""
    model.eval()
    step = rows_per_batch(x, batch_size)
    return torch.cat([model(x[i:i + step]) for i in range(0, len(x), step)])


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return (predict(model, x).argmax(1) == y).float().mean().item()


def _optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


class NonFiniteTraining(CheckFailed):
    """The loss or the logits became NaN or infinite: the trained weights would be meaningless."""


def _rng_states(gen: torch.Generator, dist: Distributed | None) -> list[dict]:
    """Every process's random state, by rank: its jitter generator and torch's global generator.
    Under DDP each rank's differ (each jitters its own shard), so all are gathered to rank 0, which
    alone writes them; a resumed rank restores its own."""
    mine = {"generator": gen.get_state(), "torch_rng": torch.get_rng_state()}
    return dist.gather(mine) if dist is not None else [mine]


def _save_state(resume: Resume, epoch: int, modules: list[nn.Module], opt, sched, rngs: list[dict],
                best_state: dict, result: FitResult) -> None:
    buf = io.BytesIO()
    torch.save({"key": resume.key, "epoch": epoch, "modules": [m.state_dict() for m in modules],
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict() if sched else None,
                "ranks": rngs, "best_state": best_state, "result": asdict(result)}, buf)
    write_bytes(resume.path, buf.getvalue())


def _restore_rngs(saved: dict, gen: torch.Generator, dist: Distributed | None) -> None:
    """This rank's own random state from a resume state (one written before per-rank states: rank 0's)."""
    ranks = saved.get("ranks") or [{"generator": saved["generator"], "torch_rng": saved["torch_rng"]}]
    rank, world = (dist.rank, dist.world) if dist is not None else (0, 1)
    if len(ranks) != world and rank == 0:
        log.warning("the resume state was saved by %d training process(es), and %d resume it: training continues, "
                    "but not bit-identically to an uninterrupted run", len(ranks), world)
    if rank < len(ranks):
        gen.set_state(ranks[rank]["generator"])
        torch.set_rng_state(ranks[rank]["torch_rng"])


def _non_finite(what: str, epoch: int) -> NonFiniteTraining:
    return NonFiniteTraining(
        f"the {what} became NaN or infinite in epoch {epoch}; nothing was written for this model. A model "
        "whose outputs are NaN or infinite cannot be trained: check its forward() (a division by zero, the log "
        "or sqrt of a negative number, an uninitialised tensor) on a batch of real inputs; if it diverged "
        "instead, lower train.lr")


def _load_state(resume: Resume | None) -> dict | None:
    if resume is None or not resume.path.exists():
        return None
    try:
        state = torch.load(resume.path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a resume file is a cache: unreadable means start again
        log.warning("%s: unreadable resume state (%s); training from the start", resume.path, exc)
        return None
    if state.get("key") != resume.key:
        log.info("%s: saved for another config or inputs; training from the start", resume.path)
        return None
    return state


def _epoch_order(n: int, gen: torch.Generator, seed: int, epoch: int, dist: Distributed | None) -> Tensor:
    """This process's sample order for one epoch: a seeded permutation, or under DDP this rank's share
    of it from a DistributedSampler (set_epoch reshuffles every epoch)."""
    if dist is None:
        return torch.randperm(n, generator=gen)
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler))


def _facts(loss: nn.Module, teacher: TeacherSignal | None, hints: HintLoss | None, history: list[dict]) -> dict:
    """What the loss, the teacher signal and the hint terms add to the trained model's metrics."""
    out = asdict(loss.params)
    if teacher is not None:
        out |= teacher.facts()
    if hints is not None:
        out["hints"] = hints.facts([h["hint_loss"] for h in history if "hint_loss" in h])
    return out


def fit(model: nn.Module, *, x: Tensor, y: Tensor, loss: nn.Module, teacher: TeacherSignal | None = None,
        x_val: Tensor, y_val: Tensor, cfg: TrainConfig, seed: int, progress: TrainProgress | None = None,
        resume: Resume | None = None, dist: Distributed | None = None, amp: bool = False) -> FitResult:
    """Train `model` in place on (x, y) and leave it holding the weights of its best validation epoch.

    Args:
        model: the network, already on x's device.
        x, y: training inputs and labels.
        loss: what to minimise, `loss(student_logits, teacher_logits, labels)` per batch (a module of
            pipeline.training.losses; `params` holds its parameters).
        teacher: the teacher's logits and hint features per batch, for a loss that uses them; with hint
            pairs, their regressors train alongside the model (and are dropped afterwards).
        x_val, y_val: the validation split for model selection and early stopping.
        cfg: optimizer, schedule, epochs, batch size, jitter, patience.
        seed: seeds shuffling and jitter, so a run is reproducible.
        progress: receives per-batch and per-epoch updates.
        resume: where to keep the per-epoch state; an existing state with the same key is continued.
        dist: under torchrun, the process group: the batch size stays the global one, each rank trains
            its share through DistributedDataParallel, and rank 0 alone validates (and decides to stop),
            saves and restores the per-epoch state.
        amp: float16 autocast with a gradient scaler (CUDA only).
    """
    leader = dist is None or dist.leader
    progress = progress if progress and leader else SilentProgress()
    gen = torch.Generator().manual_seed(seed + 1_000_003 * (dist.rank if dist else 0))  # jitter differs per rank
    hints = None
    if teacher is not None and teacher.hints:  # first: the regressors' sizes come from both models' features
        hints = build_hints(teacher.hints, model, teacher.model, x[:2])
    student_tap = Tap(model, [h.student for h in hints.pairs], "student") if hints else None
    modules = [model, *([hints.regressors] if hints else [])]
    opt = _optimizer([p for m in modules for p in m.parameters() if p.requires_grad], cfg)
    net = model
    if dist is not None:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    amp = amp and x.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    batch = math.ceil(cfg.batch_size / dist.world) if dist else cfg.batch_size
    shard = math.ceil(len(x) / dist.world) if dist else len(x)
    steps_per_epoch = math.ceil(shard / batch)
    total_steps = cfg.epochs * steps_per_epoch
    sched = (torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
             if cfg.schedule == "cosine" else None)
    result = FitResult(epochs=0, best_epoch=0, val_accuracy=-1.0)
    best_state = copy.deepcopy(model.state_dict())
    saved = _load_state(resume) if leader else None
    if dist is not None:
        saved = dist.broadcast(saved)
    if saved:
        for m, state in zip(modules, saved["modules"]):
            m.load_state_dict(state)
        opt.load_state_dict(saved["optimizer"])
        if sched:
            sched.load_state_dict(saved["scheduler"])
        _restore_rngs(saved, gen, dist)
        best_state, result = saved["best_state"], FitResult(**saved["result"])
        result.resumed_from = saved["epoch"]
        log.info("resuming at epoch %d of %d (state saved after epoch %d)", saved["epoch"] + 1, cfg.epochs,
                 saved["epoch"])
    try:
        for epoch in range(result.epochs + 1, cfg.epochs + 1):
            if cfg.patience and result.best_epoch and epoch - 1 - result.best_epoch >= cfg.patience:
                break  # an interrupted run had already stopped early
            progress.epoch_start(epoch, cfg.epochs, len(x))
            for m in modules:
                m.train()
            start = time.perf_counter()
            order = _epoch_order(len(x), gen, seed, epoch, dist).to(x.device)
            loss_sum, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
            hint_sum = 0.0
            for step in range(steps_per_epoch):
                idx = order[step * batch:(step + 1) * batch]
                xb, mixed = mix(augment(x[idx], cfg, gen), cfg, gen)
                with torch.autocast(x.device.type, dtype=torch.float16, enabled=amp):
                    logits = net(xb)
                    signal = teacher.batch(xb, idx) if teacher is not None else None
                    value = mixed_loss(loss, logits, signal.logits if signal else None, y[idx], mixed)
                    if hints is not None:
                        hint = hints(student_tap.outputs, signal.features)
                        hint_sum += float(hint.detach()) * len(idx)
                        value = value + hint
                opt.zero_grad(set_to_none=True)
                scaler.scale(value).backward()
                if dist is not None:
                    dist.average_gradients([p for m in modules[1:] for p in m.parameters()])
                scaler.step(opt)
                scaler.update()
                if sched:
                    sched.step()
                loss_sum += value.detach() * len(idx)
                correct += (logits.detach().argmax(1) == y[idx]).sum()
                progress.advance(len(idx), value.item() if step % 20 == 0 else None)
                interrupt.check()
            seconds = time.perf_counter() - start
            finite = bool(torch.isfinite(loss_sum))
            if dist is not None:
                finite = all(dist.gather(finite))  # every rank stops together
            if not finite:
                raise _non_finite("training loss", epoch)
            val_acc = None
            if leader:
                if len(y_val):
                    logits = predict(model, x_val)
                    val_finite = bool(torch.isfinite(logits).all())
                    val_acc = (logits.argmax(1) == y_val).float().mean().item() if val_finite else "non-finite"
                else:
                    val_acc = float("nan")
            if dist is not None:
                val_acc = dist.broadcast(val_acc)  # one decision for every rank
            if val_acc == "non-finite":
                raise _non_finite("model's outputs on the validation split", epoch)
            stats = {"epoch": epoch, "loss": loss_sum.item() / len(order), "train_accuracy": correct.item() / len(order),
                     "val_accuracy": val_acc, "seconds": seconds, "samples_per_s": len(x) / seconds}
            if hints is not None:  # this process's samples: under DDP, rank 0's share
                stats["hint_loss"] = round(hint_sum / len(order), 6)
            result.history.append(stats)
            progress.epoch_end(stats)
            log.debug("epoch %d: %s", epoch, stats)
            result.epochs = epoch
            # ties go to the later epoch: small val splits tie often, and later epochs have seen a lower LR
            stop = False
            if not len(y_val) or val_acc >= result.val_accuracy:
                result.val_accuracy, result.best_epoch = val_acc, epoch
                best_state = copy.deepcopy(model.state_dict())
            elif cfg.patience and epoch - result.best_epoch >= cfg.patience:
                log.info("early stop at epoch %d: val accuracy has not improved for %d epochs", epoch, cfg.patience)
                stop = True
            if resume:
                rngs = _rng_states(gen, dist)  # a collective under DDP: every rank takes part
                if leader:
                    _save_state(resume, epoch, modules, opt, sched, rngs, best_state, result)
            if stop:
                break
    finally:
        if student_tap is not None:
            student_tap.remove()
        progress.close()
    model.load_state_dict(best_state)
    result.facts = _facts(loss, teacher, hints, result.history)
    return result
