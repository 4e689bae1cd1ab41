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
from edgekd.pipeline.training.losses import Distillation
from edgekd.models import ModelSpec, build_model
dist = Distributed.start("cpu")
torch.manual_seed(0)
teacher = build_model(ModelSpec("cnn", (1, 8, 8), 10, {"channels": [8, 16], "hidden": 32}))
x, y = torch.randn(2500, 1, 8, 8), torch.randint(0, 10, (2500,))
shared = Distillation(teacher, x, y, 4.0, 0.9, augmented=False, batch_size=1024, dist=dist).cached
alone = Distillation(teacher, x, y, 4.0, 0.9, augmented=False, batch_size=1024).cached
print(dist.rank, torch.equal(shared, alone), flush=True)
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
    for status in Path("/proc").glob("[0-9]*/environ"):
        try:
            env = status.read_bytes().split(b"\0")
            ppid_chain = status.parent.joinpath("stat").read_text().split()[3]
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"LOCAL_RANK=" + rank.encode() in env and int(ppid_chain) != root_pid:
            return int(status.parent.name)
    return None


def test_a_rank_that_dies_ends_the_run_with_a_message_and_a_rerun_resumes(tmp_path):
    run = tmp_path / "r"
    cmd = [sys.executable, "-m", "edgekd.pipeline.cli", "-q", "run", DIGITS, "--out", str(run), "--nproc", "2",
           "--until", "teacher", "--set", "teacher.train.epochs=300", "--set", "run.device=cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    victim = None
    while time.time() < deadline and victim is None:
        if (run / ".resume" / "teacher.pt").exists():
            victim = _rank_pid(proc.pid, "1")
        time.sleep(0.2)
    assert victim, "rank 1 never started training"
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode not in (0, 2, 3) and "a training process failed" in err and "run the same command" in err, err[-2000:]
    status = json.loads((run / "manifest.json").read_text())["stages"]["teacher"]["status"]
    assert status in ("failed", "interrupted", "running")
    resumed = subprocess.run([*cmd[:-4], "--set", "teacher.train.epochs=4", "--set", "run.device=cpu"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]


@pytest.mark.parametrize("device", ["cpu"])
def test_mixed_precision_needs_cuda(tmp_path, capsys, device):
    from edgekd.pipeline.cli import main

    assert main(["run", DIGITS, "--out", str(tmp_path / "r"), "--set", "run.amp=true", "--set", f"run.device={device}"]) == 2
    assert "run.amp = true needs CUDA" in " ".join(capsys.readouterr().err.split())
