"""The agent as one file (agent.pyz) and its runtime table: the same bytes from the same sources, exactly
the modules the agent imports, a run in an isolated interpreter that scores a known accuracy, workers
started the way the agent was, and runtimes looked up by suffix with the known ones named."""
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgekd.bench.agent import pyz
from edgekd.bench.agent.runtimes import RUNTIMES, probe_source, runner_for, runtime_module, suffixes
from edgekd.errors import AgentError, EdgekdError
from tests.bench.test_agent import ROOT, _dense_tflite


def test_the_pyz_is_the_same_bytes_from_the_same_sources(tmp_path):
    a = pyz.build(tmp_path / "a" / "agent.pyz")
    b = pyz.build(tmp_path / "b" / "agent.pyz")
    assert a.read_bytes() == b.read_bytes() and a.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert a.stat().st_mode & 0o111  # `./agent.pyz` runs too
    names = zipfile.ZipFile(a).namelist()
    # no file's timestamp or order reaches the bytes
    assert names == sorted(names) and {i.date_time for i in zipfile.ZipFile(a).infolist()} == {(1980, 1, 1, 0, 0, 0)}
    # exactly its members (tests/test_architecture.py proves they are all the agent imports)
    assert names == sorted(pyz.members()) and zipfile.ZipFile(a).read("edgekd/errors.py") == \
        (ROOT / "edgekd" / "errors.py").read_bytes()
    assert {"__main__.py", "edgekd/fileio.py", "edgekd/bench/agent/runtimes/tflite.py"} <= set(names)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A 64 -> 10 dense model and 40 samples whose labels are its own predictions for 30 of them and
    wrong for 10: an agent that runs the model right scores exactly 0.75."""
    root = tmp_path_factory.mktemp("scored")
    _dense_tflite(root / "m.tflite", 64, 10)
    weights = np.random.default_rng(0).standard_normal((10, 64)).astype(np.float32)  # as _dense_tflite makes them
    x = np.random.default_rng(1).standard_normal((40, 1, 8, 8)).astype(np.float32)
    logits = x.reshape(40, 64) @ weights.T
    margin = np.sort(logits, 1)[:, -1] - np.sort(logits, 1)[:, -2]
    assert margin.min() > 1e-3  # no near-tie that float rounding in the runtime could flip
    y = logits.argmax(1)
    y[30:] = (y[30:] + 1) % 10
    np.savez(root / "eval.npz", x=x, y=y)
    return root / "m.tflite", root / "eval.npz"


def test_the_pyz_runs_in_an_isolated_interpreter_from_its_own_files(scored, tmp_path):
    """-I: neither the checkout nor PYTHONPATH is on sys.path; -v shows where every module came from."""
    agent = pyz.build(tmp_path / "agent.pyz")
    model, eval_path = scored
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-I", "-v", str(agent), str(model), "--eval", str(eval_path), "--processes",
                           "2", "--min-runs", "5", "--min-seconds", "0", "--warmup", "1", "-o", str(out)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())["results"]
    assert row["accuracy"] == 0.75 and row["n_eval"] == 40 and row["latency_ms"]["processes"] == 2
    assert row["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    loaded = [line for line in proc.stderr.splitlines() if line.startswith("import 'edgekd")]
    assert any("edgekd.bench.agent.cli" in line for line in loaded), proc.stderr[-3000:]
    assert all(f'<zipimporter object "{agent}/' in line for line in loaded), loaded  # none from the checkout


def test_workers_start_the_agent_the_way_it_was_started(tmp_path):
    agent = pyz.build(tmp_path / "agent.pyz")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from edgekd.bench.agent.processes import agent_command; "
            "print(agent_command())")
    from_pyz = subprocess.run([sys.executable, "-I", "-c", code, str(agent)], capture_output=True, text=True,
                              cwd=tmp_path)
    assert from_pyz.stdout.strip() == repr([sys.executable, "-I", str(agent.resolve())]), from_pyz.stderr
    installed = subprocess.run([sys.executable, "-c", code, ""], capture_output=True, text=True)
    assert installed.stdout.strip() == repr([sys.executable, "-m", "edgekd.bench.agent"]), installed.stderr


def test_a_runtime_is_one_module_and_one_row():
    assert list(RUNTIMES) == ["tflite", "onnx", "pte"]
    for name in RUNTIMES:
        module = runtime_module(name)
        assert module.SUFFIXES and len(module.PIP) == len(module.PACKAGES) and callable(module.Runner.load_runtime)
    assert suffixes() == {".tflite": "tflite", ".onnx": "onnx", ".pte": "pte"}
    assert runner_for(Path("export/m.int8.tflite")) is runtime_module("tflite").Runner
    with pytest.raises(AgentError) as err:
        runner_for(Path("m.mlpackage"))
    assert str(err.value) == "m.mlpackage: unknown model type '.mlpackage'; expected one of .tflite, .onnx, .pte"
    assert isinstance(err.value, EdgekdError) and err.value.exit_code == 2
    with pytest.raises(AgentError, match="unknown runtime 'coreml'; known: tflite, onnx, pte"):
        runtime_module("coreml")


def test_the_ssh_probe_reports_each_runtime_of_the_table():
    """The probe a device runs, here: this interpreter has LiteRT, onnxruntime and ExecuTorch, a blocked one has neither."""
    found = json.loads(subprocess.run([sys.executable, "-c", probe_source()], capture_output=True, text=True).stdout)
    assert found == {"python": sys.version.split()[0], "numpy": np.__version__, "tflite": "ai_edge_litert",
                     "onnx": "onnxruntime", "pte": "executorch"}
    blocked = subprocess.run([sys.executable, "-c", "import sys; sys.modules['onnxruntime'] = None\n" + probe_source()],
                             capture_output=True, text=True).stdout
    assert json.loads(blocked)["onnx"] is None

