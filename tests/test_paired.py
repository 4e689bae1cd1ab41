"""The one paired accuracy rule (edgekd.paired): intervals pinned against values worked by hand."""
import math

import numpy as np
import pytest

from edgekd.paired import correct_mask, judge_drop, judge_rows, newcombe_paired, wilson


def test_wilson_interval_by_hand():
    # 984 of 1000: centre (0.984 + 1.96^2/2000) / (1 + 1.96^2/1000), half-width
    # 1.96 sqrt(0.984 * 0.016 / 1000 + 1.96^2 / 4e6) / (1 + 1.96^2/1000)
    z = 1.959963984540054
    centre = (0.984 + z * z / 2000) / (1 + z * z / 1000)
    half = z * math.sqrt(0.984 * 0.016 / 1000 + z * z / 4e6) / (1 + z * z / 1000)
    assert wilson(984, 1000) == pytest.approx((centre - half, centre + half), abs=1e-15)
    assert wilson(984, 1000) == pytest.approx((0.974168, 0.990128), abs=1e-6)


def test_12_lost_1_gained_of_1000_is_cannot_tell_at_one_point():
    """Worked by hand: p_ref 0.984 (Wilson 0.974168..0.990128), p_new 0.973 (0.961001..0.981379),
    phi = (972*15 - 12*1) / sqrt(984*16*973*27) = 0.71632, lower = 0.011 - sqrt(0.009832^2 -
    2*0.71632*0.009832*0.008379 + 0.008379^2) = 0.011 - 0.006989 = 0.004011; upper 0.019728."""
    d = judge_drop(1000, 984, 973, 12, 1, limit=0.01)
    assert d.drop == pytest.approx(0.011)
    assert d.ci95 == pytest.approx((0.004011, 0.019728), abs=2e-6)
    assert d.verdict == "cannot tell"
    assert 40_000 < d.samples_to_decide < 60_000  # the drop sits 0.1 pt from the limit
    assert "cannot tell" in d.describe() and "12 lost, 1 gained of 1,000" in d.describe()


def test_40_lost_0_gained_of_1000_fails_and_3_lost_passes():
    fail = judge_drop(1000, 984, 944, 40, 0, limit=0.01)
    assert fail.ci95 == pytest.approx((0.028771, 0.053838), abs=2e-6) and fail.verdict == "fail"
    ok = judge_drop(1000, 984, 981, 3, 0, limit=0.01)
    assert ok.ci95 == pytest.approx((-0.001514, 0.008453), abs=2e-6) and ok.verdict == "pass"


def test_identical_predictions_pass_on_1000_samples_and_cannot_tell_on_200():
    same = judge_drop(1000, 980, 980, 0, 0, limit=0.01)
    assert same.drop == 0 and same.ci95 == pytest.approx((-0.003674, 0.003674), abs=2e-6) and same.verdict == "pass"
    small = judge_drop(200, 196, 196, 0, 0, limit=0.01)
    assert small.verdict == "cannot tell" and small.samples_to_decide > 200


def test_large_samples_agree_with_the_wald_interval_of_paired_differences():
    n, lost, gained, ref = 100_000, 1_200, 700, 97_000
    lo, hi = newcombe_paired(ref - lost, lost, gained, n - ref - gained)
    drop = (lost - gained) / n
    se = math.sqrt((lost + gained) - (lost - gained) ** 2 / n) / n
    assert lo == pytest.approx(drop - 1.96 * se, abs=2e-4) and hi == pytest.approx(drop + 1.96 * se, abs=2e-4)


def test_unpaired_interval_is_wider_than_the_paired_one():
    paired = newcombe_paired(972, 12, 1, 15)
    unpaired = newcombe_paired(972, 12, 1, 15, paired=False)
    assert unpaired[0] < paired[0] and unpaired[1] > paired[1]


def test_rows_are_paired_on_their_correct_bits():
    rng = np.random.default_rng(0)
    ref = rng.random(1000) < 0.98
    new = ref.copy()
    new[np.flatnonzero(ref)[:12]] = False  # 12 lost
    new[np.flatnonzero(~ref)[:1]] = True  # 1 gained
    rows = [{"artifact": a, "n_eval": 1000, "accuracy": float(m.mean()), "correct_bits": np.packbits(m).tobytes().hex()}
            for a, m in (("t", ref), ("s", new))]
    assert correct_mask(rows[0]["correct_bits"], 1000) == ref.tolist()
    d = judge_rows(rows[0], rows[1], 0.01)
    assert (d.lost, d.gained, d.paired) == (12, 1, True)
    unpaired = judge_rows({**rows[0], "correct_bits": None}, rows[1], 0.01)
    assert not unpaired.paired and unpaired.ci95[1] - unpaired.ci95[0] > d.ci95[1] - d.ci95[0]


def test_inconsistent_counts_are_refused():
    with pytest.raises(ValueError, match="inconsistent"):
        judge_drop(100, 90, 95, 1, 1, 0.01)
