"""What the training stages minimise: one module per loss, and the table that names them.

A loss is an nn.Module whose `forward(student_logits, teacher_logits, labels)` is a pure function of
one batch: it never sees a model (the teacher's logits come from training.teacher_signal, which the
training loop owns; hint terms are training.hints). Each loss class declares

    help          one line, shown where losses are listed
    Params        a frozen dataclass of its parameters; the loss is built as `Loss(params)` and keeps
                  them as `self.params` (recorded beside the trained model)
    uses_teacher  whether the student stage must give it the teacher's logits

A parameter named like a shared [distill] key (`temperature`, `alpha`) takes that key's value; every
other parameter is set in `[distill.loss_options]` and keeps its dataclass default otherwise. So a new
loss, parameters and all, is one module and one row here; neither the config schema nor the stages
change.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from edgekd.errors import ConfigError
from edgekd.pipeline.config import DistillConfig
from edgekd.pipeline.config.typed import build
from edgekd.pipeline.training.losses.ce import CrossEntropy
from edgekd.pipeline.training.losses.kd import KnowledgeDistillation, kd_loss

LOSSES: dict[str, type[nn.Module]] = {
    "ce": CrossEntropy,
    "kd": KnowledgeDistillation,
}

SHARED = ("temperature", "alpha")  # [distill] keys that parameters of the same name take their value from


def described() -> str:
    """Every loss with its help line, for messages."""
    return "; ".join(f"{name} ({loss.help})" for name, loss in LOSSES.items())


def loss_params(distill: DistillConfig) -> tuple[Any, list[str]]:
    """The parameters of `distill.loss` (a known name), and every problem with `distill.loss_options`:
    an unknown key (the valid ones listed), a wrong type, or a value the dataclass refuses."""
    cls = LOSSES[distill.loss].Params
    names = [f.name for f in dataclasses.fields(cls)]
    own = [n for n in names if n not in SHARED]
    problems = []
    for key in distill.loss_options:
        if key not in own:
            instead = f" (it is distill.{key})" if key in SHARED else ""
            valid = ", ".join(own) or "none"
            problems.append(f"distill.loss_options.{key}: not a parameter of loss {distill.loss!r}{instead}; "
                            f"valid options of {distill.loss!r}: {valid}")
    options = {k: v for k, v in distill.loss_options.items() if k in own}
    try:
        base = cls(**{n: getattr(distill, n) for n in names if n in SHARED})
        return build(cls, options, "distill.loss_options", problems, base), problems
    except ValueError as exc:  # a check of the dataclass's own (__post_init__)
        return None, [*problems, f"distill.loss_options (loss {distill.loss!r}): {exc}"]


def make_loss(distill: DistillConfig) -> nn.Module:
    """The loss `distill.loss` with its parameters from the config.

    Raises:
        ConfigError: the loss is unknown or its options are wrong (load_config has said so already).
    """
    if distill.loss not in LOSSES:
        raise ConfigError([f"distill.loss = {distill.loss!r}: unknown; valid: {described()}"], "distill")
    params, problems = loss_params(distill)
    if problems:
        raise ConfigError(problems, "distill")
    return LOSSES[distill.loss](params)


__all__ = ["LOSSES", "SHARED", "CrossEntropy", "KnowledgeDistillation", "kd_loss", "loss_params", "make_loss"]
