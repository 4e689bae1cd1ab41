"""A teacher trained elsewhere distils exactly like the same teacher trained here; an interrupted
training resumes at the epoch it was in and ends with the uninterrupted weights."""
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from edgekd.fileio import sha256_file
from edgekd.pipeline.config import load_config
from edgekd.pipeline.run import run_pipeline
from edgekd.pipeline.training.checkpoint import load_checkpoint
from tests.helpers import SEED, ctrl_c_once

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "configs" / "digits.toml"
FAST = ["teacher.train.epochs=3", "student.train.epochs=4", "run.device=cpu", f"run.seed={SEED}"]


@pytest.fixture(scope="module")
def trained_here(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("here") / "r"
    return run_dir, run_pipeline(load_config(DIGITS, FAST), run_dir, until="student")


def _files_of(teacher_pt: Path, out: Path) -> dict[str, Path]:
    """The same teacher as a plain state dict, a TorchScript file and a torch.export program."""
    model, _ = load_checkpoint(teacher_pt)
    files = {"state_dict": out / "weights.pt", "torchscript": out / "teacher.ts.pt", "torch.export": out / "teacher.pt2"}
    torch.save(model.state_dict(), files["state_dict"])
    torch.jit.save(torch.jit.script(model), files["torchscript"])
    torch.export.save(torch.export.export(model, (torch.zeros(1, 1, 8, 8),)), files["torch.export"])
    return files


@pytest.mark.parametrize("kind", ["state_dict", "torchscript", "torch.export"])
def test_a_teacher_trained_elsewhere_distils_like_the_same_teacher_trained_here(trained_here, tmp_path, kind):
    run_dir, here = trained_here
    source = _files_of(run_dir / "teacher.pt", tmp_path)[kind]
    brought = run_pipeline(load_config(DIGITS, [*FAST, f"teacher.checkpoint={source}"]), tmp_path / "r", until="student")
    teacher = brought.metrics["teacher"]
    assert teacher["source_format"] == kind and teacher["epochs"] == 0 and teacher["source_sha256"] == sha256_file(source)
    assert teacher["accuracy"] == here.metrics["teacher"]["accuracy"]
    if kind != "torch.export":  # a batch-1 program computes soft targets one sample at a time: other kernels
        assert brought.metrics["student"]["accuracy"] == here.metrics["student"]["accuracy"]
        assert sha256_file(tmp_path / "r" / "student.pt") == sha256_file(run_dir / "student.pt")
    model, _ = load_checkpoint(tmp_path / "r" / "teacher.pt")  # self-contained, weights_only loadable
    torch.load(tmp_path / "r" / "teacher.pt", weights_only=True)
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_a_torchscript_teacher_cannot_be_exported_and_says_so_before_any_work(trained_here, tmp_path, capsys):
    from edgekd.pipeline.cli import main

    source = _files_of(trained_here[0] / "teacher.pt", tmp_path)["torchscript"]
    code = main(["run", str(DIGITS), "--out", str(tmp_path / "r"), "--set", f"teacher.checkpoint={source}"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "is TorchScript" in err and "export.models = ['student']" in err
    assert not (tmp_path / "r" / "teacher.pt").exists()


def test_ctrl_c_mid_training_resumes_at_that_epoch_and_ends_with_the_same_weights(tmp_path):
    settings = ["teacher.train.epochs=60", "run.device=cpu", f"run.seed={SEED}"]
    uninterrupted = tmp_path / "whole"
    run_pipeline(load_config(DIGITS, settings), uninterrupted, until="teacher")
    run_dir = tmp_path / "cut"
    cmd = [sys.executable, "-m", "edgekd.pipeline.cli", "-q", "run", str(DIGITS), "--out", str(run_dir), "--until",
           "teacher", *[a for s in settings for a in ("--set", s)]]
    resume = run_dir / ".resume" / "teacher.pt"
    code, err = ctrl_c_once(cmd, resume, wait_s=120, delay_s=0.1)
    assert code == 130 and "interrupted" in err and "Traceback" not in err, err
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["teacher"]["status"] == "interrupted"
    saved = torch.load(resume, weights_only=True)["epoch"]
    assert 1 <= saved < 60
    resumed = run_pipeline(load_config(DIGITS, settings), run_dir, until="teacher")
    assert resumed.metrics["teacher"]["resumed_from_epoch"] == saved
    assert resumed.metrics["teacher"]["accuracy"] == json.loads((uninterrupted / "metrics.json").read_text())[
        "models"]["teacher"]["accuracy"]
    assert sha256_file(run_dir / "teacher.pt") == sha256_file(uninterrupted / "teacher.pt")  # bit for bit
    assert not resume.exists()


def test_identical_trainings_write_identical_checkpoints(trained_here, tmp_path):
    """Checkpoints hold no seconds or dates: a re-run elsewhere hashes the same, and downstream stays fresh."""
    again = tmp_path / "again"
    run_pipeline(load_config(DIGITS, FAST), again, until="student")
    for name in ("teacher.pt", "baseline.pt", "student.pt"):
        assert sha256_file(again / name) == sha256_file(trained_here[0] / name), name


def test_threads_are_part_of_the_training_stages_config(trained_here):
    run_dir, _ = trained_here
    summary = run_pipeline(load_config(DIGITS, [*FAST, f"run.threads={max(1, (os.cpu_count() or 2) - 1)}"]), run_dir,
                           until="student")
    assert summary.ran == ["teacher", "baseline", "student"], "the thread count changes trained weights"
