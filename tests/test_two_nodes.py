"""Two torchrun nodes (one process each) in two network namespaces of this machine, rendezvous over
c10d and gloo over a veth pair, each with its own run directory: the run trains as one two-process
host does (the same world size, seeds and all-reduce), and only rank 0's node writes the run."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT, SEED, two_node_run

DIGITS = str(ROOT / "configs" / "digits.toml")
TINY = ["teacher.train.epochs=3", "student.train.epochs=3", f"run.seed={SEED}", "run.device=cpu"]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                    reason="needs root and ip (Debian iproute2) to make a second network namespace")
def test_two_nodes_train_as_two_processes_on_one_host(tmp_path):
    nodes = two_node_run(DIGITS, tmp_path / "nodes", [*TINY, "run.name=digits"], until="student", timeout=300)
    assert nodes["returncodes"] == [0, 0], "\n".join(e[-2000:] for e in nodes["stderr"])
    (run,) = nodes["rank0_out"]  # rank 0 alone wrote a run directory; the other node's --out stays empty
    other = tmp_path / "nodes" / ("node1" if run.name == "node0" else "node0")
    assert not other.exists() or not any(other.rglob("*.pt"))
    one_host = subprocess.run([sys.executable, "-m", "edgekd.pipeline.cli", "-q", "run", DIGITS, "--out",
                               str(tmp_path / "one"), "--nproc", "2", "--until", "student",
                               *[a for s in [*TINY, "run.name=digits"] for a in ("--set", s)]],
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert one_host.returncode == 0, one_host.stderr[-2000:]
    two = json.loads((run / "metrics.json").read_text())["models"]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())["models"]
    for model in ("teacher", "baseline", "student"):
        assert two[model]["processes"] == one[model]["processes"] == 2
        assert two[model]["accuracy"] == one[model]["accuracy"], model  # 359 test images: equal, not close
