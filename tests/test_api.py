"""The Python API (`import edgekd`): the same code as the command line, usable from a notebook."""
import json
import subprocess
import sys

import pytest
import torch

import edgekd
from edgekd.errors import BudgetError, ConfigError, DataError, UsageError
from tests.helpers import FAST_BENCH, ROOT, SEED


def test_import_edgekd_imports_no_torch_until_it_is_needed():
    code = ("import sys, edgekd; assert callable(edgekd.gate) and 'torch' not in sys.modules, sorted(sys.modules); "
            "print(sorted(edgekd.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "load_model" in out.stdout and "run" in out.stdout
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        edgekd.nope  # noqa: B018


def test_run_trains_with_overrides_and_a_rerun_skips(tmp_path):
    overrides = {"teacher__train__epochs": 1, "student__train__epochs": 2, "run__seed": SEED, "run__device": "cpu",
                 "export.formats": ["onnx"], "export__models": ["student"]}
    run = edgekd.run(ROOT / "configs" / "digits.toml", tmp_path / "r", until="export", **overrides)
    assert run.dir == (tmp_path / "r").resolve() and run.report is None  # stopped before the report
    assert set(run.metrics) >= {"teacher", "baseline", "student"} and run.metrics["student"]["epochs"] == 2
    assert "export/student.onnx" in run.files and run.files["export/student.onnx"].is_file()
    student = run.model("student")
    x = torch.from_numpy(__import__("numpy").load(run.dir / "data" / "eval.npz")["x"])
    y = torch.from_numpy(__import__("numpy").load(run.dir / "data" / "eval.npz")["y"])
    with torch.inference_mode():
        accuracy = (student(x).argmax(1) == y).float().mean().item()
    assert accuracy == pytest.approx(run.metrics["student"]["accuracy"], abs=1e-9)  # the same model the run scored
    with pytest.raises(ConfigError, match="distill.temprature"):
        edgekd.run(ROOT / "configs" / "digits.toml", tmp_path / "r", distill__temprature=8)


def test_load_run_and_gate_on_a_finished_run(bench_run, tmp_path):
    run = edgekd.load_run(bench_run)
    assert {r["artifact"] for r in run.results} == {"export/student.onnx", "export/student.int8.tflite", "student.pt"}
    assert run.ship("local") == run.report["recommendations"]["local"] and "reference" in run.ship("local")
    assert run.ship("nowhere") is None
    budgets = tmp_path / "b.toml"
    budgets.write_text('[[budget]]\nartifact = "*.onnx"\nmin_accuracy = 0.5\n')
    ok = edgekd.gate(bench_run / "report.json", budgets, baseline=bench_run / "report.json")
    assert ok.passed and ok.exit_code == 0 and {v.rule for v in ok.verdicts} >= {"min_accuracy", "max_latency_increase"}
    budgets.write_text('[[budget]]\nartifact = "*.onnx"\nmin_accuracy = 1.01\n')
    with pytest.raises(BudgetError, match="a fraction in"):
        edgekd.gate(bench_run / "report.json", budgets)
    budgets.write_text("[regression]\nmax_latency_increase = 0.1\n")
    with pytest.raises(BudgetError, match="no --baseline"):
        edgekd.gate(bench_run / "report.json", budgets)


def test_load_run_refuses_what_is_not_a_run_or_not_what_it_wrote(bench_copy, tmp_path):
    with pytest.raises(UsageError, match="not an edgekd run directory"):
        edgekd.load_run(tmp_path)
    report = bench_copy / "report.json"
    report.write_text(json.dumps({**json.loads(report.read_text()), "models": {}}))
    with pytest.raises(DataError, match="report.json changed since edgekd wrote it"):
        edgekd.load_run(bench_copy)
    with pytest.raises(DataError, match="not a readable edgekd checkpoint"):
        edgekd.load_model(report)
