"""The pipeline end to end on digits: run directory, stage skipping, --force, resume after a kill."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.pipeline.training.checkpoint import load_checkpoint
from edgekd.pipeline.cli import main
from edgekd.pipeline.config import load_config
from edgekd.fileio import atomic_path, sha256_file
from edgekd.pipeline.run import run_pipeline
from tests.helpers import SEED, binomial_floor

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "configs" / "digits.toml"
FAST = ["teacher.train.epochs=3", "student.train.epochs=3", "distill.transfer_copies=1", "run.device=cpu",
        f"run.seed={SEED}"]


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "digits"
    cfg = load_config(DIGITS, FAST)
    return cfg, run_dir, run_pipeline(cfg, run_dir, until="student")


def _hashes(run_dir: Path) -> dict[str, str]:
    return {p.name: sha256_file(run_dir / p) for p in (Path("teacher.pt"), Path("baseline.pt"), Path("student.pt"))}


def test_run_directory_contents(fast_run):
    cfg, run_dir, summary = fast_run
    assert summary.ran == ["teacher", "baseline", "student"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["schema"] == "edgekd.manifest/1"
    for rel, art in manifest["artifacts"].items():
        assert sha256_file(run_dir / rel) == art["sha256"]
        assert (run_dir / rel).stat().st_size == art["size_bytes"]
    assert {s["status"] for s in manifest["stages"].values()} == {"done"}
    assert load_config(run_dir / "config.toml") == cfg
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["models"]["student"]["temperature"] == 1.0
    assert metrics["data"]["n_test"] == 359


@pytest.mark.parametrize("name", ["teacher", "baseline", "student"])
def test_checkpoint_reproduces_recorded_accuracy(fast_run, name):
    _, run_dir, summary = fast_run
    blob = torch.load(run_dir / f"{name}.pt", weights_only=True)
    assert blob["spec"]["arch"] == summary.metrics[name]["arch"]
    model, _ = load_checkpoint(run_dir / f"{name}.pt")
    with np.load(run_dir / "data" / "eval.npz") as f:
        x, y = torch.from_numpy(f["x"]), torch.from_numpy(f["y"])
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc == pytest.approx(summary.metrics[name]["accuracy"], abs=1e-9)
    assert acc > 0.5  # three epochs on digits reach 0.80-0.97 over seeds 0-4 and CPU paths; 0.5 is far below


def test_rerun_skips_fresh_stages_and_changes_nothing(fast_run):
    cfg, run_dir, _ = fast_run
    before = _hashes(run_dir)
    again = run_pipeline(cfg, run_dir, until="student")
    assert again.ran == [] and again.skipped == ["teacher", "baseline", "student"]
    assert _hashes(run_dir) == before


def test_changed_temperature_reruns_only_the_student(fast_run):
    _, run_dir, _ = fast_run
    cfg = load_config(DIGITS, [*FAST, "distill.temperature=2"])
    summary = run_pipeline(cfg, run_dir, until="student")
    assert summary.ran == ["student"] and summary.skipped == ["teacher", "baseline"]
    assert summary.metrics["student"]["temperature"] == 2.0


def test_force_teacher_reruns_its_dependents(fast_run):
    _, run_dir, _ = fast_run
    cfg = load_config(DIGITS, [*FAST, "distill.temperature=2"])
    summary = run_pipeline(cfg, run_dir, until="student", force=("teacher",))
    assert summary.ran == ["teacher", "student"] and summary.skipped == ["baseline"]


def test_modified_checkpoint_is_rebuilt(fast_run):
    _, run_dir, _ = fast_run
    cfg = load_config(DIGITS, [*FAST, "distill.temperature=2"])
    (run_dir / "baseline.pt").write_bytes((run_dir / "baseline.pt").read_bytes()[:100])
    summary = run_pipeline(cfg, run_dir, until="student")
    assert summary.ran == ["baseline"]
    load_checkpoint(run_dir / "baseline.pt")


def test_until_stops_after_the_named_stage(tmp_path):
    summary = run_pipeline(load_config(DIGITS, FAST), tmp_path / "r", until="baseline")
    assert summary.ran == ["teacher", "baseline"]
    assert not (tmp_path / "r" / "student.pt").exists()


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def _saved_epoch(resume: Path) -> int:
    try:
        return int(torch.load(resume, weights_only=True)["epoch"])
    except Exception:  # not written yet (files are renamed into place, so never read half-written)
        return 0


def test_kill_during_run_then_resume(tmp_path):
    """kill -9 inside the baseline's training; the same command resumes it at the saved epoch (not from the
    start) and ends with the files an uninterrupted run writes, byte for byte."""
    settings = ["teacher.train.epochs=3", "student.train.epochs=40", "run.device=cpu", f"run.seed={SEED}"]

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "edgekd.pipeline.cli", "run", str(DIGITS), "--out", str(out), "--until",
                "baseline", *[a for s in settings for a in ("--set", s)]]
    whole = subprocess.run(command(tmp_path / "whole"), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    run_dir = tmp_path / "r"
    proc = subprocess.Popen(command(run_dir), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    resume = run_dir / ".resume" / "baseline.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and _saved_epoch(resume) < 2:
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # nothing under a final name is truncated: every file parses
    assert json.loads((run_dir / "manifest.json").read_text())["stages"]["baseline"]["status"] == "running"
    load_checkpoint(run_dir / "teacher.pt")
    assert not (run_dir / "baseline.pt").exists()
    saved = _saved_epoch(resume)
    assert 2 <= saved < 40, saved
    resumed = subprocess.run(command(run_dir), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = " ".join(resumed.stderr.split())
    assert "stage teacher: up to date" in log and f"resuming at epoch {saved + 1} of 40" in log, log[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())["models"]
    assert metrics["baseline"]["resumed_from_epoch"] == saved and metrics["baseline"]["epochs"] == 40
    for name in ("teacher.pt", "baseline.pt"):
        assert sha256_file(run_dir / name) == sha256_file(tmp_path / "whole" / name), name  # bit for bit
    assert not list(run_dir.glob(".*.tmp")), "stale temporary files are cleaned on resume"
    assert not resume.exists()


def test_the_quick_config_trains_to_its_floors(tmp_path):
    """The shipped quick config end to end through the student. Whether distillation helps on digits is
    a claim over seeds, measured by `python benchmarks/distill_seeds.py configs/digits.toml`, not here."""
    cfg = load_config(DIGITS, ["run.device=cpu", f"run.seed={SEED}"])
    summary = run_pipeline(cfg, tmp_path / "r", until="student")
    m = summary.metrics
    with np.load(tmp_path / "r" / "data" / "eval.npz") as f:
        n = len(f["y"])
    # typical accuracies over seeds 0-4 with and without the other CPU kernel paths: teacher 0.98, students 0.96
    assert m["teacher"]["accuracy"] >= binomial_floor(0.98, n), m["teacher"]
    for name in ("baseline", "student"):
        assert m[name]["accuracy"] >= binomial_floor(0.96, n), m[name]
    assert m["teacher"]["macs"] >= 10 * m["student"]["macs"]  # architecture, not training: exact


@pytest.mark.parametrize("x, needle", [
    (np.full((30, 4, 4), np.nan, np.float32), "NaN or infinite"),
    (np.zeros((30, 16), np.float32), "x has rank 2"),
])
def test_cli_bad_data_exits_2(tmp_path, capsys, x, needle):
    np.savez(tmp_path / "bad.npz", x=x, y=np.arange(30) % 3)
    code = main(["run", str(DIGITS), "--out", str(tmp_path / "r"), "--set", "data.dataset=npz",
                 "--set", f"data.path={tmp_path / 'bad.npz'}"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and needle in err and "bad.npz" in err and "Traceback" not in err


def test_cli_unknown_stage_exits_2(tmp_path, capsys):
    assert main(["run", str(DIGITS), "--out", str(tmp_path / "r"), "--until", "quantise"]) == 2
    assert "valid stages in order: teacher, baseline, student, quantize, export, bench, report" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_cuda_without_gpu_exits_3(tmp_path, capsys):
    assert main(["run", str(DIGITS), "--out", str(tmp_path / "r"), "--set", "run.device=cuda"]) == 3
    assert "set run.device = 'cpu'" in " ".join(capsys.readouterr().err.split())
