"""A mobile student: depthwise-separable convolutions (MobileNet v1 style) and global average pooling."""
from __future__ import annotations

from torch import nn


def _separable(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
        nn.BatchNorm2d(c_in),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def dsconv(in_shape: tuple[int, ...], num_classes: int, stem: int = 8,
           channels: tuple[int, ...] = (16, 32), stride: int = 2) -> nn.Module:
    """Build stem conv3x3 -> one separable block per entry of `channels` -> global avg pool -> Linear.

    Every separable block downsamples by `stride`; the global pooling makes the model independent
    of the input's spatial size.
    """
    c_in = in_shape[0]
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True)]
    c_in = stem
    for c_out in channels:
        layers.append(_separable(c_in, c_out, stride))
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)
