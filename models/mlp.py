"""Fully connected classifier: Hinton et al. (2015) use 1200-1200 (teacher) and 800-800 (student)."""
from __future__ import annotations

import math

from torch import nn


def mlp(in_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...] = (800, 800),
        dropout: float = 0.0) -> nn.Module:
    """Build Flatten -> [Linear -> ReLU -> Dropout] * len(hidden) -> Linear.

    Args:
        in_shape: input shape without the batch axis, e.g. (1, 28, 28).
        num_classes: number of output logits.
        hidden: width of each hidden layer.
        dropout: dropout probability after each hidden layer (0 disables it).
    """
    return nn.Sequential(nn.Flatten(), *dense_head(math.prod(in_shape), hidden, num_classes, dropout))


def dense_head(width: int, hidden: tuple[int, ...], num_classes: int, dropout: float) -> list[nn.Module]:
    """[Linear -> ReLU -> Dropout] per hidden width, then Linear to the logits (shared with cnn's head)."""
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, num_classes))
    return layers
