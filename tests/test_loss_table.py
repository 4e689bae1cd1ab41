"""A new loss is one module and one row: the throwaway tests/margin_loss.py, added to LOSSES here, is
checked by the config (its own option, its dataclass's default, exit 2 for a wrong one) and distils a
tiny student. And the teacher signal that feeds every distillation loss, on its own."""
import math

import pytest
import torch

from edgekd.errors import ConfigError
from edgekd.models import ModelSpec, build_model
from edgekd.pipeline.cli import main
from edgekd.pipeline.config import DistillConfig, HintConfig, load_config
from edgekd.pipeline.run import run_pipeline
from edgekd.pipeline.stages import BY_NAME
from edgekd.pipeline.training.fit import predict
from edgekd.pipeline.training.losses import LOSSES, loss_params, make_loss
from edgekd.pipeline.training.teacher_signal import TeacherSignal
from tests.helpers import ROOT, SEED
from tests.margin_loss import MarginLoss, MarginParams

DIGITS = ROOT / "configs" / "digits.toml"
TINY = ["teacher.train.epochs=3", "student.train.epochs=4", "run.device=cpu", f"run.seed={SEED}",
        "student.arch='cnn'", "student.kwargs={channels=[8,16], hidden=0}"]


@pytest.fixture
def margin(monkeypatch):
    monkeypatch.setitem(LOSSES, "margin", MarginLoss)


def test_the_new_loss_equals_its_hand_value(margin):
    # teacher [ln 3, 0] at T=1 -> p_t = (3/4, 1/4); student uniform: soft CE = ln 2, hard CE = ln 2
    loss = make_loss(DistillConfig(loss="margin", temperature=1.0, loss_options={"margin": 2.0}))
    assert isinstance(loss, MarginLoss) and loss.params == MarginParams(temperature=1.0, margin=2.0)
    got = loss(torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([0])).item()
    assert got == pytest.approx(3 * math.log(2.0), abs=1e-6)  # ln 2 + 2 ln 2 = 2.0794415


def test_the_config_takes_its_parameter_and_its_dataclass_default(margin):
    cfg = load_config(DIGITS, ["distill.loss=margin", "distill.loss_options.margin=2", "distill.temperature=8"])
    params, problems = loss_params(cfg.distill)
    assert problems == [] and params == MarginParams(temperature=8.0, margin=2.0)
    assert isinstance(params.margin, float)
    assert loss_params(load_config(DIGITS, ["distill.loss=margin", "distill.temperature=3"]).distill)[0] == \
        MarginParams(temperature=3.0, margin=1.0)


@pytest.mark.parametrize("loss, option, needle", [
    ("margin", "marjin=1", "distill.loss_options.marjin: not a parameter of loss 'margin'; valid options of "
                           "'margin': margin"),
    ("margin", "margin='big'", "distill.loss_options.margin = 'big': expected a number"),
    ("margin", "margin=-1", "distill.loss_options (loss 'margin'): margin = -1.0: must be >= 0"),
    ("margin", "temperature=2", "distill.loss_options.temperature: not a parameter of loss 'margin' (it is "
                                "distill.temperature)"),
    ("kd", "beta=1", "distill.loss_options.beta: not a parameter of loss 'kd'; valid options of 'kd': none"),
])
def test_a_wrong_option_exits_2_naming_the_valid_ones(margin, tmp_path, capsys, loss, option, needle):
    code = main(["run", str(DIGITS), "--out", str(tmp_path / "r"), "--set", f"distill.loss={loss}",
                 "--set", f"distill.loss_options.{option}"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and needle in err, err
    assert not (tmp_path / "r" / "teacher.pt").exists()


def test_an_unknown_loss_lists_every_loss_with_its_help(margin):
    with pytest.raises(ConfigError) as info:
        load_config(DIGITS, ["distill.loss=kld"])
    assert "distill.loss = 'kld': unknown; valid: ce (hard labels only" in str(info.value)
    assert "margin (soft cross-entropy at T plus margin x hard labels (a test loss))" in str(info.value)


def test_options_change_the_student_hash_and_an_empty_table_changes_no_hash(margin):
    plain = load_config(DIGITS)
    assert "loss_options" not in plain.section("distill")["distill"] and "loss_options" not in plain.to_toml()
    student = BY_NAME["student"].reads_config
    one = load_config(DIGITS, ["distill.loss=margin", "distill.loss_options.margin=1"])
    two = load_config(DIGITS, ["distill.loss=margin", "distill.loss_options.margin=2"])
    assert student(one) != student(two) and one.section("distill")["distill"]["loss_options"] == {"margin": 1.0}


def test_a_tiny_distillation_trains_with_the_new_loss(margin, tmp_path):
    cfg = load_config(DIGITS, [*TINY, "distill.loss=margin", "distill.loss_options.margin=0.5", "distill.temperature=4"])
    m = run_pipeline(cfg, tmp_path / "r", until="student").metrics["student"]
    assert (m["margin"], m["temperature"], m["teacher_logits_cached"]) == (0.5, 4.0, True)
    assert m["epochs"] == 4 and m["accuracy"] > 0.5  # the KD student reaches 0.88 in these four epochs
    assert (tmp_path / "r" / "student.pt").exists()


def test_the_teacher_signal_caches_logits_by_index_and_taps_hint_features():
    torch.manual_seed(0)
    teacher = build_model(ModelSpec("cnn", (1, 8, 8), 10, {"channels": [8, 16], "hidden": 32}))
    x = torch.randn(1500, 1, 8, 8)
    idx = torch.tensor([1499, 3, 1024])
    cached = TeacherSignal(teacher, x, augmented=False, hints=(HintConfig("0", "4"),))
    # the labeller: a channels-last copy, the teacher itself untouched, its logits up to float rounding
    def conv2(model):  # 8 input channels: a layout that tells channels-last from contiguous
        return model[4].weight

    assert cached.labeller is not teacher and conv2(cached.labeller).is_contiguous(memory_format=torch.channels_last)
    assert conv2(teacher).is_contiguous() and not conv2(teacher).is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(cached.cached, predict(teacher, x), atol=1e-5)
    got = cached.batch(x[idx], idx)
    assert torch.equal(got.logits, cached.cached[idx])
    assert [f.shape for f in got.features] == [torch.Size([3, 16, 4, 4])]
    live = TeacherSignal(teacher, x, augmented=True).batch(x[idx], idx)
    assert live.features == [] and torch.allclose(live.logits, cached.cached[idx], atol=1e-5)
    assert not teacher._forward_hooks and not any(m._forward_hooks for m in teacher.modules())  # hooks removed
