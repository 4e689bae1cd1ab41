"""The model registry: known names, user models, hand-counted parameters and MACs."""
from pathlib import Path

import pytest
import torch

from edgekd.models import ModelSpec, build_model, check_arch, count_macs, count_params
from edgekd.errors import ModelError


def test_mlp_params_and_macs_by_hand():
    model = build_model(ModelSpec("mlp", (1, 8, 8), 10, {"hidden": [32]}))
    assert count_params(model) == (64 * 32 + 32) + (32 * 10 + 10)
    assert count_macs(model, (1, 8, 8)) == 64 * 32 + 32 * 10


def test_cnn_macs_by_hand():
    # conv 1->4 3x3 at 8x8, pool -> 4x4, conv 4->8 3x3 at 4x4, pool -> 2x2, linear 32->10
    model = build_model(ModelSpec("cnn", (1, 8, 8), 10, {"channels": [4, 8], "hidden": 0}))
    assert count_macs(model, (1, 8, 8)) == 64 * 4 * 9 + 16 * 8 * 4 * 9 + 32 * 10
    # convs have no bias under BatchNorm; BN has weight + bias per channel
    assert count_params(model) == 4 * 9 + 8 + 8 * 4 * 9 + 16 + 32 * 10 + 10


def test_dsconv_uses_depthwise_convolutions():
    model = build_model(ModelSpec("dsconv", (1, 28, 28), 10, {"stem": 8, "channels": [16]}))
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 1 and depthwise[0].groups == 8
    # stem 28x28x8x9, depthwise 14x14x8x9, pointwise 14x14x16x8, linear 16x10
    assert count_macs(model, (1, 28, 28)) == 784 * 72 + 196 * 72 + 196 * 128 + 160


def test_unknown_arch_lists_valid_names():
    assert check_arch("resnet", {}) == ["unknown architecture 'resnet'; valid: mlp, cnn, dsconv, "
                                        "or a user model as 'package.module:ClassName'"]


def test_user_model_gets_num_classes_and_channels():
    model = build_model(ModelSpec("tests.user_models:TinyResNet", (3, 8, 8), 5, {"width": 4}))
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 5)


@pytest.mark.parametrize("arch, kwargs, needle", [
    ("tests.nope:Net", {}, "cannot import module 'tests.nope'"),
    ("tests.user_models:Missing", {}, "has no class 'Missing'"),
    ("tests.user_models:TinyResNet", {"depth": 3}, "does not take depth"),
    ("tests.user_models:WrongOutput", {}, "outputs shape [3] per sample"),
    ("mlp", {"hidden": "wide"}, "failed to build"),
])
def test_bad_models_raise_model_error(arch, kwargs, needle):
    with pytest.raises(ModelError) as err:
        build_model(ModelSpec(arch, (1, 8, 8), 10, kwargs))
    assert needle in str(err.value)


def test_a_user_model_given_as_a_file_path(tmp_path):
    source = Path(__file__).with_name("user_models.py")
    (tmp_path / "my net.py").write_text(source.read_text())
    model = build_model(ModelSpec(f"{tmp_path / 'my net.py'}:TinyResNet", (1, 8, 8), 4, {"width": 4}))
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 4)
    with pytest.raises(ModelError, match="user model file .* not found"):
        build_model(ModelSpec(f"{tmp_path / 'missing.py'}:Net", (1, 8, 8), 4, {}))
