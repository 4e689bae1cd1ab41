"""A lower input resolution for any architecture (`input_pool`, the search's resolution dimension): the
model average-pools its input, costs a quarter of the MACs at factor 2, rebuilds from its checkpoint,
and converts to every format with the parity every file must have."""
import numpy as np
import pytest
import torch

from edgekd.export.driver import export_model
from edgekd.export.formats import FORMATS, ExportOptions
from edgekd.models import ModelSpec, build_model, count_macs
from edgekd.models.registry import check_arch
from edgekd.pipeline.config import SearchConfig
from edgekd.pipeline.search import candidates, space_for
from edgekd.pipeline.training.checkpoint import load_checkpoint, save_checkpoint
from tests.helpers import SEED

KWARGS = {"channels": [8, 16], "hidden": 32}


def _pooled(pool=2):
    torch.manual_seed(SEED)
    spec = ModelSpec("cnn", (1, 28, 28), 10, {**KWARGS, "input_pool": pool})
    return build_model(spec), spec


def test_the_model_sees_the_pooled_input_at_a_quarter_of_the_macs(tmp_path):
    model, spec = _pooled()
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), model.net(torch.nn.functional.avg_pool2d(x, 2)))
    full = build_model(ModelSpec("cnn", (1, 28, 28), 10, KWARGS))
    # conv MACs scale with the pixels (1/4); the dense head's input shrinks from 16x7x7 to 16x3x3
    assert count_macs(full, (1, 28, 28)) == 307_648 and count_macs(model, (1, 28, 28)) == 75_488
    save_checkpoint(tmp_path / "m.pt", model, spec)
    again, again_spec = load_checkpoint(tmp_path / "m.pt")
    with torch.no_grad():
        assert again_spec.kwargs["input_pool"] == 2 and torch.equal(again(x), model(x))


def test_a_bad_factor_is_named():
    assert check_arch("cnn", {"input_pool": 0}) == [
        "input_pool = 0: must be an integer >= 1 (the factor the input is average-pooled by)"]
    assert check_arch("cnn", {"input_pool": 2}) == [] and check_arch("mlp", {"hidden": [8], "input_pool": 3}) == []


@pytest.fixture(scope="module")
def trained():
    """The pooled student trained briefly on 2,000 mnist5k digits; 500 test digits to check the files on."""
    from edgekd.pipeline.config import DataConfig
    from edgekd.pipeline.data import prepare

    data = prepare(DataConfig(dataset="mnist5k"), seed=SEED)
    pick = np.random.default_rng(SEED).permutation(len(data.y_train))[:2000]  # the splits are sorted by class
    x, y = torch.from_numpy(data.x_train[pick]), torch.from_numpy(data.y_train[pick])
    model, _ = _pooled()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(6):
        for i in range(0, 2000, 50):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i:i + 50]), y[i:i + 50]).backward()
            opt.step()
    test = np.random.default_rng(SEED).permutation(len(data.y_test))[:500]
    return model.eval(), data.x_test[test], data.y_test[test]


@pytest.mark.parametrize("fmt", ["onnx", "onnx_int8", "tflite_int8", "pte_int8"])
def test_a_pooled_student_converts_with_parity(tmp_path, trained, fmt):
    model, x, y = trained
    result = export_model(fmt, model, torch.zeros(1, 1, 28, 28), tmp_path / f"m{FORMATS[fmt].suffix}",
                          ExportOptions(x, y, calibration_x=x[:100]))
    # fp32 parity as every fp32 file must have it; int8 within what int8 costs this small model
    assert result.parity.top1_agreement >= (0.999 if fmt == "onnx" else 0.97)
    assert result.parity.reference_accuracy > 0.8 and result.parity.accuracy > result.parity.reference_accuracy - 0.03


def test_the_search_varies_the_resolution_when_asked():
    defaults = {"channels": [32, 64], "hidden": 128, "kernel_size": 3}
    plain = candidates(space_for("cnn"), KWARGS, defaults, 30, 0)
    assert not any(c.name.endswith("-r2") or "input_pool" in c.kwargs for c in plain)
    both = candidates(space_for("cnn", SearchConfig(input_pools=(1, 2))), KWARGS, defaults, 100, 0)
    pooled = [c for c in both if c.name.endswith("-r2")]
    assert both[0].name == "w1-d+0" and all(c.kwargs["input_pool"] == 2 for c in pooled)
    # every width and depth at both resolutions
    assert sorted(c.name.removesuffix("-r2") for c in pooled) == sorted(c.name for c in both if c not in pooled)
