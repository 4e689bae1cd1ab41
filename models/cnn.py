"""Plain convolutional classifiers: a stack of conv blocks, then a small fully connected head."""
from __future__ import annotations

from torch import nn

from edgekd.models.mlp import dense_head


def _conv_block(c_in: int, c_out: int, kernel_size: int, batchnorm: bool, pool: bool) -> list[nn.Module]:
    block: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=not batchnorm)]
    if batchnorm:
        block.append(nn.BatchNorm2d(c_out))
    block.append(nn.ReLU(inplace=True))
    if pool:
        block.append(nn.MaxPool2d(2))
    return block


def cnn(in_shape: tuple[int, ...], num_classes: int, channels: tuple[int, ...] = (32, 64),
        hidden: int = 128, kernel_size: int = 3, convs_per_stage: int = 1, batchnorm: bool = True,
        dropout: float = 0.0) -> nn.Module:
    """Build [conv-bn-relu]*convs_per_stage + maxpool per stage, then Linear(hidden) -> Linear(classes).

    Each stage halves the spatial size while it is at least 2; `hidden=0` puts the classifier
    directly on the flattened features.
    """
    c_in, height, width = in_shape
    layers: list[nn.Module] = []
    for c_out in channels:
        pool = min(height, width) >= 2
        for i in range(convs_per_stage):
            layers += _conv_block(c_in, c_out, kernel_size, batchnorm, pool and i == convs_per_stage - 1)
            c_in = c_out
        if pool:
            height, width = height // 2, width // 2
    layers.append(nn.Flatten())
    features = c_in * height * width
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers += dense_head(features, (hidden,) if hidden > 0 else (), num_classes, dropout)
    return nn.Sequential(*layers)
