"""A user-defined model, importable as `tests.user_models:TinyResNet` (BatchNorm, residual add, depthwise conv)."""
import torch
from torch import nn


class TinyResNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False), nn.BatchNorm2d(width),
                                   nn.ReLU(), nn.Conv2d(width, width, 1))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

    def forward(self, x):
        h = self.stem(x)
        return self.head(h + self.block(h))


class WrongOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


@torch.library.custom_op("edgekd_test::mystery", mutates_args=())
def mystery(x: torch.Tensor) -> torch.Tensor:
    """An op no converter knows: stands in for any custom kernel a user's model may call."""
    return x.clone()


@mystery.register_fake
def _(x):
    return torch.empty_like(x)


class Mystery(nn.Module):
    def forward(self, x):
        return torch.ops.edgekd_test.mystery(x)


class WithCustomOp(nn.Module):
    """A model whose layer `body.mystery` cannot be converted to ONNX or TFLite."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential()
        self.body.add_module("conv", nn.Conv2d(1, 4, 3, padding=1))
        self.body.add_module("mystery", Mystery())
        self.head = nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    def forward(self, x):
        return self.head(self.body(x))


class QuantFragile(nn.Module):
    """Its features pass through a tensor offset by 1000, computed from the input (so no converter can
    fold it away): int8, with one scale per activation tensor, keeps steps of about 1000/255 there and
    loses the features, so int8 accuracy collapses while fp32 is unaffected. Stands in for any model
    that int8 really breaks."""

    def __init__(self, num_classes: int, in_channels: int = 1, hidden: int = 32):
        super().__init__()
        self.fc1 = nn.LazyLinear(hidden)
        self.loud = nn.LazyLinear(1)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        x = x.flatten(1)
        if not hasattr(self, "_frozen"):  # the loud channel is a constant 1000, computed from the input
            self.loud(x)
            nn.init.zeros_(self.loud.weight)
            nn.init.constant_(self.loud.bias, 1000.0)
            self.loud.requires_grad_(False)
            self._frozen = True
        loud = self.loud(x)
        return self.fc2((torch.relu(self.fc1(x)) + loud) - loud)
