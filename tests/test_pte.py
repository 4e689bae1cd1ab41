"""ExecuTorch files (.pte) measured by the agent: the accuracy the export stage recorded, from the agent
run as one file the way a device runs it; exit 3 with the pip command where ExecuTorch is missing; a
truncated program is exit 2 naming the file. (Parity, audit and sidecars of the .pte files are checked
with every other format in test_export.py.)"""
import json
import subprocess
import sys

import numpy as np
import pytest

from edgekd.bench.agent import pyz
from edgekd.pipeline.config import load_config
from edgekd.pipeline.run import run_pipeline
from tests.helpers import FAST_BENCH, ROOT

QUICK = ["--processes", "2", "--min-runs", "20", "--min-seconds", "0.02", "--warmup", "2"]


@pytest.fixture(scope="module")
def pte_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pte") / "digits"
    run_pipeline(load_config(ROOT / "configs" / "digits.toml", [*FAST_BENCH, "export.formats=['pte', 'pte_int8']"]),
                 run_dir, until="export")
    return run_dir


@pytest.fixture(scope="module")
def agent_pyz(tmp_path_factory):
    return pyz.build(tmp_path_factory.mktemp("pyz") / "agent.pyz")


def _agent(args, block, agent_pyz):
    """The agent as one file, with `block` first on the path: edgekd is never importable there, as on a
    device (torch is: ExecuTorch's Python runtime takes torch tensors)."""
    (block / "edgekd").mkdir(parents=True, exist_ok=True)
    (block / "edgekd" / "__init__.py").write_text("raise ImportError('edgekd is not on the device')\n")
    env = {"PYTHONPATH": str(block), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(agent_pyz), *map(str, args)], capture_output=True, text=True, env=env)


@pytest.mark.parametrize("name", ["student.pte", "student.int8.pte"])
def test_agent_runs_pte_with_the_accuracy_export_recorded(pte_run, agent_pyz, tmp_path, name):
    from executorch.runtime import Runtime
    import torch

    model, eval_path = pte_run / "export" / name, pte_run / "data" / "eval.npz"
    proc = _agent([model, "--eval", eval_path, *QUICK, "-o", tmp_path / "r.json"], tmp_path / "block", agent_pyz)
    assert proc.returncode == 0, proc.stderr
    assert "threadpool" not in proc.stderr and "cpuinfo" not in proc.stderr, proc.stderr  # ExecuTorch's C++ log lines
    (result,) = json.loads((tmp_path / "r.json").read_text())["results"]
    sidecar = json.loads(model.with_name(name + ".json").read_text())
    with np.load(eval_path) as f:
        x, y = f["x"], f["y"]
    method = Runtime.get().load_program(model).load_method("forward")
    direct = np.concatenate([method.execute([torch.from_numpy(x[i:i + 1])])[0].numpy() for i in range(len(x))])
    assert result["runtime"] == "executorch" and result["n_eval"] == len(y) == 359
    assert result["accuracy"] == pytest.approx(float((direct.argmax(1) == y).mean()), abs=1e-12)
    assert result["accuracy"] == pytest.approx(sidecar["parity"]["accuracy"], abs=1e-12)
    lat = result["latency_ms"]
    assert lat["processes"] == 2 and 0 < lat["min"] <= lat["p50"] <= lat["max"]


def test_agent_without_executorch_exits_3_with_the_pip_command(pte_run, agent_pyz, tmp_path):
    block = tmp_path / "block"
    (block / "executorch").mkdir(parents=True)
    (block / "executorch" / "__init__.py").write_text("raise ImportError('not installed')\n")
    proc = _agent([pte_run / "export" / "student.pte", *QUICK], block, agent_pyz)
    assert proc.returncode == 3 and "pip install executorch" in proc.stderr and "Traceback" not in proc.stderr


def test_truncated_pte_is_exit_2_naming_the_file(pte_run, agent_pyz, tmp_path):
    broken = tmp_path / "broken.int8.pte"
    broken.write_bytes((pte_run / "export" / "student.int8.pte").read_bytes()[:700])
    proc = _agent([broken, *QUICK], tmp_path / "block", agent_pyz)
    assert proc.returncode == 2 and "broken.int8.pte" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
