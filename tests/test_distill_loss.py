"""The distillation loss against values computed by hand from its definition."""
import math

import pytest
import torch
import torch.nn.functional as F

from edgekd.pipeline.config import DistillConfig
from edgekd.pipeline.training.losses import LOSSES, make_loss
from edgekd.pipeline.training.losses.kd import kd_loss


def _kl_two_class(t_logit: float, temperature: float) -> float:
    """KL(p_t || p_s) for teacher logits [t_logit, 0] and student logits [0, 0] at temperature T."""
    a = math.exp(t_logit / temperature)
    p = [a / (a + 1), 1 / (a + 1)]
    return sum(pi * math.log(pi / 0.5) for pi in p)


def test_kd_soft_term_matches_hand_value_at_t1():
    # teacher [ln 3, 0] -> p_t = (3/4, 1/4); student uniform -> KL = 3/4 ln(3/2) + 1/4 ln(1/2)
    student = torch.zeros(1, 2)
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert expected == pytest.approx(0.1308120, abs=1e-7)
    got = kd_loss(student, teacher, torch.tensor([0]), temperature=1.0, alpha=1.0).item()
    assert got == pytest.approx(expected, abs=1e-6)


def test_kd_scales_soft_term_by_t_squared():
    # float64: at T=20 the KL is ~4e-4, below float32's cancellation error
    student = torch.zeros(1, 2, dtype=torch.float64)
    teacher = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    for t in (2.0, 4.0, 20.0):
        expected = t * t * _kl_two_class(math.log(3.0), t)
        got = kd_loss(student, teacher, torch.tensor([0]), temperature=t, alpha=1.0).item()
        assert got == pytest.approx(expected, rel=1e-9), f"T={t}: soft term must be T² x KL"
    # at T=2 by hand: p_t = (√3/(√3+1), 1/(√3+1)) = (0.6339746, 0.3660254) -> KL = 0.0363408, times T² = 0.1453631
    got = kd_loss(student, teacher, torch.tensor([0]), temperature=2.0, alpha=1.0).item()
    assert got == pytest.approx(0.1453631, abs=1e-6)


def test_kd_uses_batchmean_not_elementwise_mean():
    # two identical samples of 4 classes: batchmean gives the per-sample KL; 'mean' would divide by 4 more
    teacher = torch.tensor([[2.0, 1.0, 0.0, -1.0]] * 2)
    student = torch.tensor([[0.5, 0.0, 0.0, 0.5]] * 2)
    p_t, p_s = F.softmax(teacher[0], 0).tolist(), F.softmax(student[0], 0).tolist()
    per_sample = sum(a * math.log(a / b) for a, b in zip(p_t, p_s))
    got = kd_loss(student, teacher, torch.tensor([0, 0]), temperature=1.0, alpha=1.0).item()
    assert got == pytest.approx(per_sample, rel=1e-5)
    assert got != pytest.approx(per_sample / 4, rel=1e-2)


def test_kd_mixes_soft_and_hard_terms_with_alpha():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
    teacher = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    labels = torch.tensor([0, 2])
    t, alpha = 4.0, 0.7
    hard = -sum(math.log(F.softmax(student[i], 0)[labels[i]].item()) for i in range(2)) / 2
    soft = t * t * sum(
        sum(a * math.log(a / b) for a, b in zip(F.softmax(teacher[i] / t, 0).tolist(), F.softmax(student[i] / t, 0).tolist()))
        for i in range(2)) / 2
    got = kd_loss(student, teacher, labels, temperature=t, alpha=alpha).item()
    assert got == pytest.approx(alpha * soft + (1 - alpha) * hard, rel=1e-5)
    assert kd_loss(student, teacher, labels, t, alpha=0.0).item() == pytest.approx(hard, rel=1e-6)


def test_the_kd_row_is_the_formula_with_the_configs_temperature_and_alpha():
    # the module distill.loss = "kd" builds, at T=2 and alpha=0.25, on the hand values above:
    # 0.25 x 0.1453631 (soft, T² x KL) + 0.75 x ln 2 (hard: the student is uniform over two classes)
    loss = make_loss(DistillConfig(loss="kd", temperature=2.0, alpha=0.25))
    assert isinstance(loss, LOSSES["kd"]) and (loss.params.temperature, loss.params.alpha) == (2.0, 0.25)
    student, teacher = torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]])
    got = loss(student, teacher, torch.tensor([0])).item()
    assert got == pytest.approx(0.25 * 0.1453631 + 0.75 * math.log(2.0), abs=1e-6)
    assert LOSSES["ce"]()(student, None, torch.tensor([1])).item() == pytest.approx(math.log(2.0), abs=1e-7)
