"""Architectures for benchmarks/int8_methods.py: real models, trained normally, that int8 PTQ hurts more than most.

`MobileNetV1NoBN` is MobileNet v1 without BatchNorm (biases instead). With 5x5 depthwise convolutions at
stride 1 it ends in a global average pool over a large, peaky feature map; LiteRT's int8 MEAN keeps its
input's scale for the pooled features, which rounds them to a few levels (ONNX Runtime gives the pooled
output its own calibrated scale). Found by screening MobileNet v1/v2/v3-style, Mixer, SqueezeNet and
all-convolutional students on digits and mnist5k: the one that lost the most, 1.49 points (int8 TFLite)
mean over seeds 0-2.
"""
from torch import nn


def _act(name: str) -> nn.Module:
    return {"relu": nn.ReLU(), "relu6": nn.ReLU6()}[name]


class MobileNetV1NoBN(nn.Module):
    """Stem conv, depthwise-separable blocks (no BatchNorm), global average pooling, Linear."""

    def __init__(self, num_classes: int, in_channels: int = 1, stem: int = 8, channels: tuple = (16, 32),
                 act: str = "relu6", dw_kernel: int = 3, stride: int = 2):
        super().__init__()
        layers = [nn.Conv2d(in_channels, stem, 3, padding=1), _act(act)]
        c = stem
        for c_out in channels:
            layers += [nn.Conv2d(c, c, dw_kernel, stride=stride, padding=dw_kernel // 2, groups=c), _act(act),
                       nn.Conv2d(c, c_out, 1), _act(act)]
            c = c_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)
