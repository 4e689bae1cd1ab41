"""The distillation science: sweeps, transfer sets missing classes with bias correction, hint losses,
k-fold comparison. Tiny settings on digits; the full-size numbers are benchmarks/."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.errors import UsageError
from edgekd.fileio import sha256_file
from edgekd.pipeline.cli import main
from edgekd.pipeline.config import DataConfig, load_config
from edgekd.pipeline.cv import paired_interval, verdict
from edgekd.pipeline.data import prepare
from edgekd.pipeline.run import run_pipeline
from edgekd.pipeline.sweep import point_name, split_values
from edgekd.pipeline.training.bias import best_shift
from edgekd.pipeline.training.checkpoint import load_checkpoint
from tests.helpers import ROOT, SEED

DIGITS = ROOT / "configs" / "digits.toml"
TINY = ["teacher.train.epochs=3", "student.train.epochs=4", "run.device=cpu", f"run.seed={SEED}",
        "student.arch='cnn'", "student.kwargs={channels=[8,16], hidden=0}"]


def test_grid_values_split_only_at_top_level():
    assert split_values('1,2, 4') == ["1", "2", "4"]
    assert split_values('[300,300],[30,30],"a,b"') == ["[300,300]", "[30,30]", '"a,b"']
    assert point_name({"distill.temperature": "8", "distill.alpha": "0.5", "student.kwargs": "{hidden=[30,30]}"}, 1) == \
        "T8-a0.5-kwargs=hidden_30_30-s1"


def test_sweep_trains_one_teacher_and_a_student_per_point_and_seed(tmp_path, capsys):
    args = ["sweep", str(DIGITS), "--set", "distill.temperature=1,4", *[a for s in TINY for a in ("--set", s)],
            "--seeds", "2", "--jobs", "2", "--out", str(tmp_path / "s")]
    assert main(args) == 0
    summary = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert [p["values"] for p in summary["points"]] == [{"distill.temperature": "1"}, {"distill.temperature": "4"}]
    for p in summary["points"]:
        assert len(p["accuracy"]) == 2 and p["mean"] == pytest.approx(np.mean(p["accuracy"]))
    variants = sorted(p.name for p in (tmp_path / "s" / "students").iterdir())
    assert variants == ["T1-s0", "T1-s1", "T4-s0", "T4-s1"]
    teacher = sha256_file(tmp_path / "s" / "teacher.pt")
    assert "Sweep of this teacher's students" in (tmp_path / "s" / "report.md").read_text()
    assert (tmp_path / "s" / "plots" / "sweep.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(args) == 0  # a re-run finds every point fresh
    assert capsys.readouterr().err.count("(up to date, skipped)") == 4
    assert sha256_file(tmp_path / "s" / "teacher.pt") == teacher


def test_a_sweep_may_not_change_the_teacher(tmp_path, capsys):
    code = main(["sweep", str(DIGITS), "--set", "teacher.train.epochs=2,3", "--out", str(tmp_path / "s")])
    assert code == 2 and "changes [teacher]" in " ".join(capsys.readouterr().err.split())


def test_bias_shift_by_hand():
    # class 2 (missing from the transfer set) needs +1.75 to win on both of its samples, not on class 0's
    logits = torch.tensor([[0.0, 1.0, -0.5], [0.0, 1.0, 0.6], [2.0, 0.0, 0.0]])
    shift, before, after = best_shift(logits, torch.tensor([2, 2, 0]), [2])
    assert shift == 1.75 and before == pytest.approx(1 / 3) and after == 1.0


@pytest.mark.slow  # minutes on a 2-core AMD EPYC; make test-slow
def test_omitted_classes_leave_the_transfer_set_and_the_correction_is_in_the_model(tmp_path):
    cfg = load_config(DIGITS, [*TINY, "student.train.epochs=8", "distill.temperature=4", "distill.transfer.omit_classes=[3]"])
    summary = run_pipeline(cfg, tmp_path / "r", until="export")
    m = summary.metrics
    assert m["student"]["transfer_classes"] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert m["student"]["train_samples"] == m["baseline"]["train_samples"]
    assert m["student"]["train_samples"] < 0.95 * len(prepare(cfg.data, SEED).y_train)
    correction = m["student"]["bias_correction"]
    assert correction["classes"] == [3] and correction["val_accuracy_after"] >= correction["val_accuracy_before"]
    # the stored model is the corrected one: searching its validation logits again finds nothing to add
    model, _ = load_checkpoint(tmp_path / "r" / "student.pt")
    data = prepare(cfg.data, SEED)
    with torch.no_grad():
        val_logits = model(torch.from_numpy(np.asarray(data.x_val)))
    assert best_shift(val_logits, torch.from_numpy(data.y_val), [3])[0] == 0.0
    onnx = [a for a in summary.artifacts if a["file"] == "export/student.onnx"][0]  # and so are the exported files
    assert onnx["parity"]["top1_agreement"] >= 0.999


def test_a_zero_hint_weight_reproduces_the_plain_student_exactly(tmp_path):
    plain = run_pipeline(load_config(DIGITS, TINY), tmp_path / "plain", until="student")
    hinted = run_pipeline(load_config(DIGITS, [*TINY, 'distill.hints=[{student="4", teacher="4", weight=0.0}]']),
                          tmp_path / "zero", until="student")
    assert sha256_file(tmp_path / "zero" / "student.pt") == sha256_file(tmp_path / "plain" / "student.pt")
    assert hinted.metrics["student"]["accuracy"] == plain.metrics["student"]["accuracy"]


def test_the_hint_loss_decreases_and_no_regressor_is_exported(tmp_path):
    cfg = load_config(DIGITS, [*TINY, 'distill.hints=[{student="4", teacher="4", weight=1.0}]',
                               "export.models=['student']", "export.formats=['onnx']"])
    summary = run_pipeline(cfg, tmp_path / "r", until="export")
    losses = summary.metrics["student"]["hints"]["loss_by_epoch"]
    assert len(losses) == 4 and losses[-1] < losses[0]
    state = torch.load(tmp_path / "r" / "student.pt", weights_only=True)["state_dict"]
    plain = load_checkpoint(tmp_path / "r" / "baseline.pt")[0].state_dict()  # the same architecture, no hints
    assert set(state) == set(plain)
    audit = summary.artifacts[0]["audit"]
    assert audit["ops"] == load_onnx_ops(tmp_path / "r" / "export" / "student.onnx")


def load_onnx_ops(path: Path) -> dict:
    import onnx
    from collections import Counter

    return dict(sorted(Counter(n.op_type for n in onnx.load(str(path)).graph.node).items()))


@pytest.mark.parametrize("hint, needles", [
    ('{student="nope", teacher="4", weight=0.1}', ["no student module 'nope'", "valid module paths: 0, 1, 2"]),
    ('{student="9", teacher="4", weight=0.1}', ["cannot pair student '9' (shape [10])", "teacher '4' (shape [64, 4, 4])"]),
])
def test_an_impossible_hint_exits_2_before_training(tmp_path, capsys, hint, needles):
    code = main(["run", str(DIGITS), "--out", str(tmp_path / "r"), *[a for s in TINY for a in ("--set", s)],
                 "--set", f"distill.hints=[{hint}]"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and all(n in err for n in needles), err
    assert not (tmp_path / "r" / "teacher.pt").exists()


def test_folds_are_stratified_disjoint_and_cover_the_data():
    tests = [prepare(DataConfig(dataset="digits", folds=5, fold=k), seed=SEED) for k in range(5)]
    rows = [{r.tobytes() for r in np.asarray(ds.x_test)} for ds in tests]
    assert sum(len(ds.y_test) for ds in tests) == 1797
    assert all(len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 1797 for ds in tests)
    for ds in tests:  # each class keeps its share of every fold to within one sample
        assert np.all(np.abs(np.bincount(ds.y_test, minlength=10) - np.bincount(
            np.concatenate([ds.y_train, ds.y_val, ds.y_test]), minlength=10) / 5) <= 1)
    assert sum(len(a & b) for i, a in enumerate(rows) for b in rows[i + 1:]) <= 10  # digits repeats a few images


def test_paired_interval_by_hand():
    mean, lo, hi = paired_interval([0.01, 0.02, 0.03])
    half = 4.302652729911275 * 0.01 / np.sqrt(3)  # t(0.975, 2 df) x sd / sqrt(n)
    assert (mean, lo, hi) == (pytest.approx(0.02), pytest.approx(0.02 - half), pytest.approx(0.02 + half))
    assert verdict(lo, hi).startswith("distillation did not help beyond noise")
    assert verdict(0.001, 0.02).startswith("distillation helped beyond noise")


def test_cv_reports_every_fold_and_a_paired_verdict(tmp_path):
    assert main(["-q", "cv", str(DIGITS), "--folds", "2", *[a for s in TINY for a in ("--set", s)],
                 "--out", str(tmp_path / "cv")]) == 0
    result = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert len(result["per_fold"]) == 2 and set(result["models"]) == {"teacher", "student", "baseline"}
    d = result["distilled_minus_simple"]
    assert d["per_fold"] == [pytest.approx(f["student"] - f["baseline"]) for f in result["per_fold"]]
    assert d["verdict"] in (verdict(*d["ci95"]),) and "Distilled − simple" in (tmp_path / "cv" / "cv.md").read_text()


def test_sweep_needs_a_grid(tmp_path):
    with pytest.raises(UsageError, match="at least one --set KEY=V1,V2"):
        main(["--debug", "sweep", str(DIGITS), "--set", "distill.temperature=4", "--out", str(tmp_path / "s")])
