"""On-the-fly augmentation (`train.flip`, `train.crop_padding`, with `train.jitter`): each image's view
checked against the transforms it may have had, drawn reproducibly from the run's generator, and
shown to the teacher exactly as to the student."""
import dataclasses

import pytest
import torch
from torch import nn

from edgekd.pipeline.config import DistillConfig, TrainConfig
from edgekd.pipeline.training.fit import augment, fit
from edgekd.pipeline.training.losses import make_loss
from edgekd.pipeline.training.teacher_signal import TeacherSignal

X = torch.randn(200, 2, 5, 7, generator=torch.Generator().manual_seed(0))


def _gen(seed=1):
    return torch.Generator().manual_seed(seed)


def test_flip_mirrors_about_half_the_images_reproducibly():
    out = augment(X, TrainConfig(flip=True), _gen())
    mirrored = torch.tensor([torch.equal(o, x.flip(-1)) for o, x in zip(out, X)])
    kept = torch.tensor([torch.equal(o, x) for o, x in zip(out, X)])
    assert bool((mirrored ^ kept).all())  # every image is itself or its mirror (random data: never both)
    assert 70 <= int(mirrored.sum()) <= 130  # Binomial(200, 0.5): mean 100, sd 7.1
    assert torch.equal(out, augment(X, TrainConfig(flip=True), _gen()))
    assert not torch.equal(out, augment(X, TrainConfig(flip=True), _gen(2)))


def _padded_crops(x, pad):
    padded = nn.functional.pad(x, (pad,) * 4)
    h, w = x.shape[-2:]
    return [padded[:, dy:dy + h, dx:dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]


def test_crop_padding_is_a_crop_of_the_zero_padded_image():
    out = augment(X, TrainConfig(crop_padding=2), _gen())
    which = [next(k for k, crop in enumerate(_padded_crops(x, 2)) if torch.equal(o, crop)) for o, x in zip(out, X)]
    assert len(set(which)) == 25  # 200 draws over the 5 x 5 offsets: every offset appears
    assert sum(k == 12 for k in which) < 30  # the centre (no shift): 1/25 of the draws, 8 expected


def test_no_augmentation_leaves_the_batch_and_the_generator_untouched():
    gen = _gen()
    state = gen.get_state()
    assert augment(X, TrainConfig(), gen) is X and torch.equal(gen.get_state(), state)
    assert not TrainConfig().augmented and TrainConfig(flip=True).augmented and TrainConfig(crop_padding=4).augmented


def test_teacher_sees_the_augmented_batch_the_student_sees():
    seen = {"student": [], "teacher": []}

    def net(name):
        model = nn.Sequential(nn.Flatten(), nn.Linear(70, 3))
        model.register_forward_hook(lambda m, args, out: seen[name].append(args[0].clone()) if m.training or
                                    name == "teacher" else None)
        return model

    student, teacher = net("student"), net("teacher").eval()
    cfg = TrainConfig(epochs=2, batch_size=50, flip=True, crop_padding=1, jitter=1)
    y = torch.arange(200) % 3
    signal = TeacherSignal(teacher, X, augmented=cfg.augmented)
    fit(student, x=X, y=y, loss=make_loss(DistillConfig()), teacher=signal, x_val=X[:20], y_val=y[:20], cfg=cfg, seed=0)
    assert len(seen["student"]) == len(seen["teacher"]) == 8  # 2 epochs of 4 batches, no cached teacher pass
    assert all(torch.equal(s, t) for s, t in zip(seen["student"], seen["teacher"]))
    assert not any(torch.equal(s, X[:50]) for s in seen["student"])


def test_negative_crop_padding_is_a_config_error():
    from edgekd.errors import ConfigError
    from edgekd.pipeline.config import load_config
    from tests.helpers import ROOT

    with pytest.raises(ConfigError, match="student.train.crop_padding = -1: must be >= 0"):
        load_config(ROOT / "configs" / "digits.toml", ["student.train.crop_padding=-1"])
    cfg = load_config(ROOT / "configs" / "digits.toml", ["teacher.train.flip=true"])
    assert cfg.teacher.train.flip and dataclasses.asdict(cfg.teacher.train)["crop_padding"] == 0


def test_mixup_blends_each_image_with_its_partner_by_one_lambda():
    from edgekd.pipeline.training.mixing import mix

    out, mixed = mix(X, TrainConfig(mixup=0.4), _gen())
    assert 0 < mixed.lam < 1 and sorted(mixed.partner.tolist()) == list(range(len(X)))
    torch.testing.assert_close(out, X * mixed.lam + X[mixed.partner] * (1 - mixed.lam), rtol=0, atol=0)
    again, same = mix(X, TrainConfig(mixup=0.4), _gen())
    assert torch.equal(again, out) and same.lam == mixed.lam
    lams = [mix(X, TrainConfig(mixup=0.4), _gen(s))[1].lam for s in range(400)]
    # Beta(0.4, 0.4): mean 1/2, variance 1/(4 * 1.8) = 0.139 (sd of the mean of 400: 0.019)
    assert abs(sum(lams) / 400 - 0.5) < 0.08 and abs(float(torch.tensor(lams).var()) - 0.139) < 0.03


def test_cutmix_pastes_one_box_of_the_partner_and_lambda_is_the_uncovered_share():
    from edgekd.pipeline.training.mixing import mix

    x = torch.randn(50, 2, 20, 24, generator=_gen(3))
    for seed in range(20):
        out, mixed = mix(x, TrainConfig(cutmix=1.0), _gen(seed))
        from_partner = (out == x[mixed.partner]) & (out != x)
        rows, cols = from_partner.any(0).any(0).any(1).nonzero(), from_partner.any(0).any(0).any(0).nonzero()
        area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) if len(rows) else 0
        assert mixed.lam == pytest.approx(1 - int(area) / (20 * 24))
        if len(rows):  # inside the box every pixel is the partner's, outside every pixel its own
            box = (slice(None), slice(None), slice(int(rows.min()), int(rows.max()) + 1),
                   slice(int(cols.min()), int(cols.max()) + 1))
            assert torch.equal(out[box], x[mixed.partner][box])
            rest = out.clone()
            rest[box] = x[box]
            assert torch.equal(rest, x)


def test_mixed_loss_is_the_lambda_weighted_sum_over_both_label_sets():
    from edgekd.pipeline.training.mixing import Mixed, mixed_loss

    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    ce = nn.functional.cross_entropy
    value = mixed_loss(lambda s, t, y: ce(s, y), logits, None, labels, Mixed(torch.tensor([1, 0]), 0.75))
    # hand-computed: CE(labels) = mean(log(1+e^-2), log(1+e^-1)) = (0.126928 + 0.313262) / 2 = 0.220095;
    # CE(swapped) = (2.126928 + 1.313262) / 2 = 1.720095; 0.75 * 0.220095 + 0.25 * 1.720095 = 0.595095
    assert float(value) == pytest.approx(0.595095, abs=1e-5)


def test_mixing_counts_as_augmented_so_the_teacher_sees_the_mixed_batch():
    assert TrainConfig(mixup=0.2).augmented and TrainConfig(cutmix=1.0).augmented and not TrainConfig().augmented
