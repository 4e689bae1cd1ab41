"""Training under torchrun (DistributedDataParallel, gloo on CPU): the same run directory as one process,
written by rank 0 alone; soft targets every rank shares exactly; a rank that dies ends the run clearly."""
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from edgekd.fileio import sha256_file
from tests.helpers import ROOT, SEED

DIGITS = str(ROOT / "configs" / "digits.toml")
TINY = ["teacher.train.epochs=3", "student.train.epochs=3", f"run.seed={SEED}", "run.device=cpu"]


def _run(out: Path, *extra: str, env=None, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "edgekd.pipeline.cli", "-q", "run", DIGITS, "--out", str(out), "--nproc", "2",
           *[a for s in TINY for a in ("--set", s)], *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, **kw)


def test_two_processes_train_and_rank_0_alone_writes_each_file_once(tmp_path):
    trace = tmp_path / "writes.tsv"
    proc = _run(tmp_path / "r", "--until", "export", "--set", "export.models=['student']",
                "--set", "export.formats=['onnx']", env={"EDGEKD_TRACE_WRITES": str(trace)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    writes = [line.split("\t") for line in trace.read_text().splitlines()]
    assert {rank for _, rank, _ in writes} == {"0"}, "only rank 0 writes"
    assert len({pid for pid, _, _ in writes}) == 1
    run = tmp_path / "r"
    counts = Counter(Path(path).relative_to(run).as_posix() for _, _, path in writes)
    for name in ("teacher.pt", "baseline.pt", "student.pt", "data/eval.npz", "export/student.onnx",
                 "export/student.onnx.json"):
        assert counts[name] == 1, (name, counts[name])
    assert counts[".resume/teacher.pt"] == 3  # the per-epoch state, by rank 0 alone
    manifest = json.loads((run / "manifest.json").read_text())
    assert all(sha256_file(run / rel) == a["sha256"] for rel, a in manifest["artifacts"].items())
    metrics = json.loads((run / "metrics.json").read_text())["models"]
    assert {m["processes"] for m in metrics.values()} == {2}
    assert metrics["teacher"]["accuracy"] > 0.5  # three epochs on digits reach 0.8-0.95 here
    again = _run(run, "--until", "student")  # a re-run under torchrun skips what is fresh
    assert again.returncode == 0 and not list((run / ".resume").glob("*"))


SOFT_TARGETS = """
import sys, torch
from edgekd.pipeline.distributed import Distributed
from edgekd.pipeline.training.teacher_signal import TeacherSignal
from edgekd.models import ModelSpec, build_model
dist = Distributed.start("cpu")
torch.manual_seed(0)
teacher = build_model(ModelSpec("cnn", (1, 8, 8), 10, {"channels": [8, 16], "hidden": 32}))
x = torch.randn(2500, 1, 8, 8)
shared = TeacherSignal(teacher, x, augmented=False, batch_size=1024, dist=dist).cached
alone = TeacherSignal(teacher, x, augmented=False, batch_size=1024).cached
sys.stdout.write(f"{dist.rank} {torch.equal(shared, alone)}\\n")  # one write: the ranks share the pipe
sys.stdout.flush()
dist.close()
"""


def test_soft_targets_are_computed_once_sharded_and_equal_to_one_process(tmp_path):
    script = tmp_path / "soft.py"
    script.write_text(SOFT_TARGETS)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(line for line in proc.stdout.splitlines() if line) == ["0 True", "1 True"]


def _rank_pid(root_pid: int, rank: str) -> int | None:
    """The pid of training process `rank` among the descendants of `root_pid` (other jobs on this machine
    may run torchrun too)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == root_pid:
                return True
        return False
    for pid in parents:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and f"LOCAL_RANK={rank}".encode() in env and descends(pid):
            return pid
    return None


def _saved_epoch(resume: Path) -> int:
    import torch

    try:
        return int(torch.load(resume, weights_only=True)["epoch"])
    except Exception:  # not written yet (renamed into place atomically, so never half-read)
        return 0


@pytest.mark.slow  # minutes on a 2-core AMD EPYC; make test-slow
def test_a_rank_that_dies_ends_the_run_with_a_message_and_a_rerun_resumes_bit_identically(tmp_path):
    """Rank 1 is killed mid-training; the same command then resumes at the saved epoch, every rank with its
    own random state (each jitters its own shard differently), and ends with the uninterrupted weights."""
    settings = ["teacher.train.epochs=20", "run.device=cpu", f"run.seed={SEED}"]  # the teacher jitters ±1 pixel

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "edgekd.pipeline.cli", "run", DIGITS, "--out", str(out), "--nproc", "2",
                "--until", "teacher", *[a for s in settings for a in ("--set", s)]]
    whole = subprocess.run(command(tmp_path / "whole"), capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    run = tmp_path / "cut"
    proc = subprocess.Popen(command(run), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    resume = run / ".resume" / "teacher.pt"
    deadline = time.time() + 120
    victim = None
    while time.time() < deadline and proc.poll() is None and victim is None:
        if resume.exists() and _saved_epoch(resume) >= 2:
            victim = _rank_pid(proc.pid, "1")
        time.sleep(0.02)
    assert victim, "rank 1 never got past epoch 2: " + (proc.stderr.read()[-2000:] if proc.poll() is not None else "")
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=180)
    err = " ".join(err.split())
    assert proc.returncode == 1 and "a training process failed" in err and "run the same command" in err, (
        proc.returncode, err[-2000:])
    teacher = json.loads((run / "manifest.json").read_text())["stages"]["teacher"]
    assert teacher["status"] == "failed", teacher  # rank 0 saw the lost peer, or torchrun's SIGTERM: both recorded
    saved = _saved_epoch(resume)
    assert 2 <= saved < 20, saved
    assert not (run / "teacher.pt").exists()
    resumed = subprocess.run(command(run), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming at epoch {saved + 1} of 20" in " ".join(resumed.stderr.split()), resumed.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())["models"]["teacher"]
    assert metrics["resumed_from_epoch"] == saved and metrics["epochs"] == 20 and metrics["processes"] == 2
    assert sha256_file(run / "teacher.pt") == sha256_file(tmp_path / "whole" / "teacher.pt")  # bit for bit
    assert not resume.exists()


@pytest.mark.parametrize("device", ["cpu"])
def test_mixed_precision_needs_cuda(tmp_path, capsys, device):
    from edgekd.pipeline.cli import main

    assert main(["run", DIGITS, "--out", str(tmp_path / "r"), "--set", "run.amp=true", "--set", f"run.device={device}"]) == 2
    assert "run.amp = true needs CUDA" in " ".join(capsys.readouterr().err.split())
