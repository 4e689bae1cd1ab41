"""The format table: every format is one `Format` object and one row of FORMATS, and everything else
(driver, parity tolerance, audit, sidecar, cache key, --help, config validation) follows from it.

The proof: a test-only format declared here, the way export/onnx_format.py declares its own, added as
one row, and exported by the pipeline like any other.
"""
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgekd.errors import ExportError, ParityError
from edgekd.export import onnx_format
from edgekd.export.driver import export_model
from edgekd.export.formats import FORMATS, ExportOptions, format_of, run_file
from edgekd.export.parity import THRESHOLDS
from edgekd.export.spec import Format
from edgekd.pipeline.cli import main
from edgekd.pipeline.config import load_config
from edgekd.pipeline.run import run_pipeline
from edgekd.pipeline.training.checkpoint import load_checkpoint
from tests.helpers import ROOT, SEED

DIGITS = ROOT / "configs" / "digits.toml"
NAMES = "onnx, onnx_int8, tflite, tflite_fp16, tflite_int8, pte, pte_int8"

# fp32 ONNX under another name and suffix, with its own (stricter) parity tolerance, and a calibration
# record so the calibration path of the stage is exercised too
COPY_TOLERANCE = (1.0, 1e-4)
ONNX_COPY = Format(name="onnx_copy", suffix=".copy.onnx", runtime="onnx", precision="fp32",
                   help="test-only copy of fp32 ONNX", convert=onnx_format.convert_onnx, audit=onnx_format.audit_onnx,
                   io_signature=onnx_format.io_signature, options=("opset",),
                   calibration=lambda options: {"method": "copy", "given": len(options.calibration_x)},
                   parity=COPY_TOLERANCE)


@pytest.fixture
def with_copy(monkeypatch):
    monkeypatch.setitem(FORMATS, "onnx_copy", ONNX_COPY)


def test_the_table_is_consistent():
    from edgekd.bench.agent.runtimes import runtime_module

    assert ", ".join(FORMATS) == NAMES
    assert all(name == f.name for name, f in FORMATS.items())
    assert len({f.suffix for f in FORMATS.values()}) == len(FORMATS)
    for f in FORMATS.values():  # the agent runs every format, by the runtime the format names
        assert any(f.suffix.endswith(s) for s in runtime_module(f.runtime).SUFFIXES), f
        assert f.tolerance == THRESHOLDS[f.precision]
    assert [n for n, f in FORMATS.items() if f.calibration] == ["onnx_int8", "tflite_int8", "pte_int8"]
    assert [n for n, f in FORMATS.items() if f.layout_option] == ["tflite", "tflite_fp16", "tflite_int8"]
    assert format_of(Path("m.int8.tflite")) == "tflite_int8" and format_of(Path("m.onnx")) == "onnx"


def test_reading_the_table_imports_no_converter():
    import subprocess
    import sys

    code = ("import sys; import edgekd.export.formats; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'litert_torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_format_in_config_is_exit_2_listing_the_valid_names(tmp_path, capsys):
    code = main(["run", str(DIGITS), "--out", str(tmp_path / "r"), "--set", "export.formats=['onnx', 'onxx']"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and f"export.formats: unknown 'onxx'; valid: {NAMES}" in err, err
    assert not (tmp_path / "r").exists()


def test_help_gives_each_format_with_its_help_line(with_copy, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = re.sub(r"(\w)- (\w)", r"\1-\2", " ".join(capsys.readouterr().out.split()))  # argparse wraps at hyphens
    assert ("formats: onnx (fp32 ONNX); onnx_int8 (static int8 ONNX, QDQ, per-channel weights); tflite (fp32 "
            "TFLite); tflite_fp16 (TFLite with fp16 weights); tflite_int8 (full-integer int8 TFLite, int8 input and "
            "output); pte (fp32 ExecuTorch, XNNPACK delegate); pte_int8 (static int8 ExecuTorch, per-channel weights, "
            "XNNPACK delegate); onnx_copy (test-only copy of fp32 ONNX).") in text, text


def test_a_format_that_needs_calibration_refuses_to_run_without(with_copy, tmp_path):
    x = np.zeros((4, 1, 8, 8), np.float32)
    with pytest.raises(ExportError, match=r"onnx_copy needs calibration samples \(export.calibration_samples > 0\)"):
        export_model("onnx_copy", torch.nn.Flatten(), torch.zeros(1, 1, 8, 8), tmp_path / "m.copy.onnx",
                     ExportOptions(x, np.zeros(4, np.int64)))
    assert not list(tmp_path.iterdir())


def test_one_module_and_one_row_make_a_format_the_pipeline_exports(with_copy, tmp_path):
    settings = ["teacher.train.epochs=1", "student.train.epochs=2", "run.device=cpu", f"run.seed={SEED}",
                "export.models=['student']", "export.formats=['onnx_copy']", "export.calibration_samples=40"]
    cfg = load_config(DIGITS, settings)
    assert cfg.export.formats == ("onnx_copy",)
    run_dir = tmp_path / "digits"
    run_pipeline(cfg, run_dir, until="export")

    path = run_dir / "export" / "student.copy.onnx"
    assert sorted(p.name for p in path.parent.iterdir()) == ["student.copy.onnx", "student.copy.onnx.json"]
    assert format_of(path) == "onnx_copy"
    with np.load(run_dir / "data" / "eval.npz") as f:
        x, y = f["x"], f["y"]
    model, _ = load_checkpoint(run_dir / "student.pt")
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.abs(got - ref).max() <= COPY_TOLERANCE[1]
    assert np.array_equal(run_file(path, x, "nchw").argmax(1), got.argmax(1))

    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    parity = sidecar["parity"]
    assert parity["n"] == len(y) == 359 and parity["top1_agreement"] == 1.0
    assert parity["max_abs_diff"] <= COPY_TOLERANCE[1]
    assert parity["accuracy"] == pytest.approx((got.argmax(1) == y).mean(), abs=1e-9)
    assert (sidecar["format"], sidecar["precision"]) == ("onnx", "fp32")
    assert sidecar["calibration"] == {"samples": 40, "split": "train", "method": "copy", "given": 40}
    assert sidecar["input"] == {"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32",
                                "quantization": None, "layout": "nchw"}
    audit = sidecar["audit"]
    assert (audit["kind"], audit["weight_dtypes"], audit["opset"]) == ("float", ["float32"], 18)


class _Times(torch.nn.Module):
    def forward(self, x):
        return x * 1.01


def _one_percent_off(model, sample, path, options):
    """fp32 ONNX of the model with every logit 1 % larger: a converter off by a known amount."""
    onnx_format.convert_onnx(torch.nn.Sequential(model, _Times()), sample, path, options)


@pytest.mark.parametrize("max_diff", [1.0, 1e-3])
def test_the_driver_holds_a_file_to_its_format_s_own_tolerance(monkeypatch, tmp_path, max_diff):
    from edgekd.models import ModelSpec, build_model

    monkeypatch.setitem(FORMATS, "onnx_off", replace(ONNX_COPY, name="onnx_off", suffix=".off.onnx",
                                                     convert=_one_percent_off, calibration=None,
                                                     parity=(0.999, max_diff)))
    torch.manual_seed(SEED)
    model = build_model(ModelSpec("mlp", (1, 8, 8), 10, {"hidden": [16]})).eval()
    x = np.random.default_rng(SEED).standard_normal((64, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        off_by = 0.01 * np.abs(model(torch.from_numpy(x)).numpy()).max()
    assert 1e-3 < off_by < 1.0, off_by
    out = tmp_path / "m.off.onnx"
    if max_diff == 1.0:
        parity = export_model("onnx_off", model, torch.zeros(1, 1, 8, 8), out, ExportOptions(x, np.zeros(64))).parity
        assert parity.top1_agreement == 1.0 and parity.max_abs_diff == pytest.approx(off_by, rel=1e-4)
        assert out.exists()
    else:
        with pytest.raises(ParityError, match=r"m.off.onnx: fp32 parity failed on 64 eval samples: max \|Δlogit\| "
                                              r"\S+ > 1e-03"):
            export_model("onnx_off", model, torch.zeros(1, 1, 8, 8), out, ExportOptions(x, np.zeros(64)))
        assert not list(tmp_path.iterdir())
