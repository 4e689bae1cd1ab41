"""Bias correction for classes missing from the transfer set (Hinton, Vinyals & Dean 2015, section 3).

A student distilled without any 3s still learns from the teacher's soft targets what a 3 looks like,
but its output bias for 3 ends up too low. Raising the biases of the missing classes by one amount,
chosen on the validation split (never the test split), recovers most of them. With `only_classes`
the missing classes are all the others, and raising them equals lowering the kept ones.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from edgekd.errors import ModelError

SHIFTS = np.round(np.arange(-40.0, 40.0001, 0.25), 2)  # candidate amounts, in logits


def output_layer(model: nn.Module, num_classes: int) -> nn.Linear:
    """The last linear layer with one output per class and a bias: where the class biases live."""
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not heads or heads[-1].bias is None:
        raise ModelError(f"distill.bias_correction = 'auto' needs a final nn.Linear({num_classes}) with a bias in the "
                         "student; set distill.bias_correction = 'none' for this architecture")
    return heads[-1]


def per_class_errors(logits: Tensor, y: Tensor, num_classes: int) -> list[int]:
    wrong = logits.argmax(1) != y
    return [int(wrong[y == c].sum()) for c in range(num_classes)]


def best_shift(val_logits: Tensor, y_val: Tensor, classes: list[int]) -> tuple[float, float, float]:
    """(shift, val accuracy before, after): the shift of `classes`' logits that maximises validation
    accuracy; ties go to the smallest |shift|."""
    mask = torch.zeros(val_logits.shape[1], dtype=val_logits.dtype, device=val_logits.device)
    mask[classes] = 1.0
    scores = [((val_logits + s * mask).argmax(1) == y_val).float().mean().item() for s in SHIFTS]
    best = max(range(len(SHIFTS)), key=lambda i: (scores[i], -abs(SHIFTS[i])))
    return float(SHIFTS[best]), scores[int(np.flatnonzero(SHIFTS == 0)[0])], scores[best]


def correct(model: nn.Module, classes: list[int], val: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor],
            num_classes: int, predict) -> dict:
    """Raise `classes`' output biases by the best validation shift, in place; the facts to record."""
    head = output_layer(model, num_classes)
    val_logits, test_logits = predict(model, val[0]), predict(model, test[0])
    shift, val_before, val_after = best_shift(val_logits, val[1], classes)
    with torch.no_grad():
        head.bias[classes] += shift
    after = predict(model, test[0])
    return {"bias_correction": {
        "classes": classes, "shift": shift, "val_accuracy_before": val_before, "val_accuracy_after": val_after,
        "test_errors_before": per_class_errors(test_logits, test[1], num_classes),
        "test_errors_after": per_class_errors(after, test[1], num_classes),
        "test_accuracy_before": float((test_logits.argmax(1) == test[1]).float().mean())}}
