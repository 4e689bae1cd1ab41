"""ExecuTorch files (.pte) measured by the agent: the accuracy the export stage recorded, from the agent
run as one file the way a device runs it, through ExecuTorch's Python bindings and through the agent's
torch-free runner (what a Raspberry Pi without torch runs); exit 3 with the pip command where ExecuTorch
is missing, and with the compiler to install where only a torch-free runner could run it; a truncated
program is exit 2 naming the file. (Parity, audit and sidecars of the .pte files are checked
with every other format in test_export.py.)"""
import json
import shutil
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


def _block(block, *packages):
    """`block`, holding a package of each name that fails to import, as on a device that lacks it."""
    for name in packages:
        (block / name).mkdir(parents=True, exist_ok=True)
        (block / name / "__init__.py").write_text(f"raise ImportError('{name} is not on the device')\n")
    return block


def _agent(args, block, agent_pyz, **env):
    """The agent as one file, with `block` first on the path: edgekd is never importable there, as on a
    device (torch is, unless `block` holds it too: ExecuTorch's Python bindings take torch tensors)."""
    env = {"PYTHONPATH": str(_block(block, "edgekd")), "PATH": "/usr/bin:/bin", **env}
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


@pytest.mark.skipif(shutil.which("c++") is None, reason="needs a C++ compiler (c++, e.g. g++) for the torch-free runner")
@pytest.mark.parametrize("name", ["student.pte", "student.int8.pte"])
def test_without_torch_the_agent_builds_its_runner_and_scores_what_export_recorded(pte_run, agent_pyz, tmp_path, name):
    model, cache = pte_run / "export" / name, tmp_path / "cache"
    block = _block(tmp_path / "block", "torch")
    proc = _agent([model, "--eval", pte_run / "data" / "eval.npz", *QUICK, "-o", tmp_path / "r.json"], block, agent_pyz,
                  XDG_CACHE_HOME=str(cache))
    assert proc.returncode == 0, proc.stderr
    assert "threadpool" not in proc.stderr and "cpuinfo" not in proc.stderr, proc.stderr
    (result,) = json.loads((tmp_path / "r.json").read_text())["results"]
    sidecar = json.loads(model.with_name(name + ".json").read_text())
    assert result["runtime"] == "executorch" and result["n_eval"] == 359
    assert result["accuracy"] == pytest.approx(sidecar["parity"]["accuracy"], abs=1e-12)
    assert len(list(cache.glob("edgekd/pte-runner/*/libedgekd_pte.so"))) == 1  # built from the .pyz's own source


@pytest.mark.skipif(shutil.which("c++") is None, reason="needs a C++ compiler (c++, e.g. g++) for the torch-free runner")
def test_the_torch_free_runner_gives_the_bindings_logits_bit_for_bit(pte_run, tmp_path, monkeypatch):
    from edgekd.bench.agent.runtimes import pte, pte_native

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    library = pte_native.load_library(pte_native.wheel_root())
    with np.load(pte_run / "data" / "eval.npz") as f:
        x = f["x"]
    for name in ("student.pte", "student.int8.pte"):
        program = pte_native.Program(library, pte_run / "export" / name)
        native = np.stack([program.run(np.ascontiguousarray(x[i:i + 1])) for i in range(len(x))])
        assert program.input_shape == (1, *x.shape[1:])
        np.testing.assert_array_equal(native, pte.Runner(pte_run / "export" / name, 1).predict(x))


def test_agent_without_executorch_exits_3_with_the_pip_command(pte_run, agent_pyz, tmp_path):
    proc = _agent([pte_run / "export" / "student.pte", *QUICK], _block(tmp_path / "block", "executorch"), agent_pyz)
    assert proc.returncode == 3 and "pip install executorch" in proc.stderr and "Traceback" not in proc.stderr


def test_an_unwritable_runner_cache_is_exit_3_naming_the_folder_and_the_fix(pte_run, agent_pyz, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    proc = _agent([pte_run / "export" / "student.pte", *QUICK], _block(tmp_path / "block", "torch"), agent_pyz,
                  XDG_CACHE_HOME=str(tmp_path / "a-file"))
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
    assert str(tmp_path / "a-file" / "edgekd" / "pte-runner") in proc.stderr and "XDG_CACHE_HOME" in proc.stderr


def test_without_torch_or_a_compiler_the_agent_exits_3_naming_both_fixes(pte_run, agent_pyz, tmp_path):
    proc = _agent([pte_run / "export" / "student.pte", *QUICK], _block(tmp_path / "block", "torch"), agent_pyz,
                  PATH=str(tmp_path / "no-compiler-here"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
    assert "no C++ compiler" in proc.stderr and "apt install g++" in proc.stderr, proc.stderr
    assert "pip install executorch" in proc.stderr


def test_truncated_pte_is_exit_2_naming_the_file(pte_run, agent_pyz, tmp_path):
    broken = tmp_path / "broken.int8.pte"
    broken.write_bytes((pte_run / "export" / "student.int8.pte").read_bytes()[:700])
    proc = _agent([broken, *QUICK], tmp_path / "block", agent_pyz)
    assert proc.returncode == 2 and "broken.int8.pte" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
