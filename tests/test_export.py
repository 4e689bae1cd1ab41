"""Export on digits: parity per precision, what the files really are, bad models and bad files.

The run's student is a user model with BatchNorm, a residual addition and depthwise convolutions;
every check below reads the written files with the runtimes directly, not our own metadata.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from edgekd.errors import ExportError
from edgekd.export.formats import FORMATS, ExportOptions
from edgekd.export.driver import export_model
from edgekd.export.runtimes import run
from edgekd.pipeline.training.checkpoint import load_checkpoint
from edgekd.pipeline.config import load_config
from edgekd.fileio import sha256_file
from edgekd.pipeline.run import run_pipeline
from tests.helpers import SEED
from tests.user_models import WithCustomOp

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "configs" / "digits.toml"
SETTINGS = ["teacher.train.epochs=8", "student.train.epochs=20", "student.train.lr=0.01", "run.device=cpu",
            f"run.seed={SEED}", "student.arch=tests.user_models:TinyResNet", "student.kwargs={width=16}",
            "export.calibration_samples=128", "export.int8_method=ptq", "export.int8_fallback=false"]  # the PTQ files


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("export") / "digits"
    summary = run_pipeline(load_config(DIGITS, SETTINGS), run_dir, until="export")
    with np.load(run_dir / "data" / "eval.npz") as f:
        x, y = f["x"], f["y"]
    return run_dir, summary, x, y


def _torch_logits(run_dir, name, x):
    model, _ = load_checkpoint(run_dir / f"{name}.pt")
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("model", ["student", "teacher"])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_artifact_parity_measured_independently(exported, model, fmt):
    run_dir, _, x, y = exported
    path = run_dir / "export" / f"{model}{FORMATS[fmt].suffix}"
    got = run(FORMATS[fmt].runtime, path, x, "nhwc" if FORMATS[fmt].layout_option else "nchw")
    ref = _torch_logits(run_dir, model, x)
    agree = (got.argmax(1) == ref.argmax(1)).mean()
    diff = np.abs(got - ref)
    msg = f"{path.name}: agreement {agree:.4f}, max |Δ| {diff.max():.2e}, mean {diff.mean():.2e}"
    precision = FORMATS[fmt].precision
    if precision == "fp32":
        assert agree >= 0.999 and diff.max() <= 1e-3, msg
    elif precision == "fp16":
        assert agree >= 0.995, msg
    else:  # int8: no drop beyond 1 point (export.max_int8_drop) that the eval set can resolve
        lost = int(((ref.argmax(1) == y) & (got.argmax(1) != y)).sum())
        gained = int(((got.argmax(1) == y) & (ref.argmax(1) != y)).sum())
        # under "no real drop" lost - gained has standard deviation sqrt(lost + gained); allow 3 of them
        assert lost - gained <= 0.01 * len(y) + 3 * np.sqrt(lost + gained), f"{msg}, lost {lost}, gained {gained}"
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    assert sidecar["sha256"] == sha256_file(path) and sidecar["size_bytes"] == path.stat().st_size
    assert sidecar["parity"]["accuracy"] == pytest.approx((got.argmax(1) == y).mean(), abs=1e-9)
    assert sidecar["source_checkpoint_sha256"] == sha256_file(run_dir / f"{model}.pt")


def test_int8_tflite_is_full_integer_by_its_own_tensor_details(exported):
    run_dir = exported[0]
    for model in ("student", "teacher"):
        interp = Interpreter(model_path=str(run_dir / "export" / f"{model}.int8.tflite"),
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interp.allocate_tensors()
        assert interp.get_input_details()[0]["dtype"] == np.int8
        assert interp.get_output_details()[0]["dtype"] == np.int8
        assert interp.get_input_details()[0]["quantization"][0] > 0
        ops = interp._get_ops_details()
        tensors = {t["index"]: t for t in interp.get_tensor_details()}
        filters = [tensors[op["inputs"][1]] for op in ops
                   if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
        assert filters and all(t["dtype"] == np.int8 for t in filters)
        assert any(len(t["quantization_parameters"]["scales"]) > 1 for t in filters), "per-channel weights"
        assert {op["op_name"] for op in ops}.isdisjoint({"DEQUANTIZE"}), "no float islands inside"


def test_int8_tflite_size_vs_fp32(exported):
    export = exported[0] / "export"
    ratio = (export / "teacher.int8.tflite").stat().st_size / (export / "teacher.tflite").stat().st_size
    assert ratio <= 0.31, ratio  # 53k parameters: int8 weights plus a fixed flatbuffer overhead


def test_onnx_is_one_file_with_dynamic_batch_and_metadata(exported, tmp_path):
    run_dir, _, x, _ = exported
    for name in ("student.onnx", "student.int8.onnx"):
        lone = tmp_path / name
        shutil.copy(run_dir / "export" / name, lone)
        assert list(tmp_path.iterdir()) == [lone]
        onnx.checker.check_model(str(lone), full_check=True)
        model = onnx.load(str(lone))
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        meta = {p.key: p.value for p in model.metadata_props}
        assert json.loads(meta["edgekd.labels"]) == [str(i) for i in range(10)]
        session = ort.InferenceSession(str(lone), providers=["CPUExecutionProvider"])
        assert session.run(None, {"input": x[:7]})[0].shape == (7, 10)
        lone.unlink()
    assert not list((run_dir / "export").glob("*.data"))


def test_batchnorm_is_folded(exported):
    artifacts = {a["file"]: a["audit"] for a in exported[1].artifacts}
    for model in ("student", "teacher"):
        assert "BatchNormalization" not in artifacts[f"export/{model}.onnx"]["ops"]


def _options(n=16):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    return ExportOptions(x, rng.integers(0, 10, n), calibration_x=x)


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_unconvertible_op_names_the_layer(tmp_path, fmt):
    model = WithCustomOp()
    model(torch.zeros(1, 1, 8, 8))  # materialise the lazy layer
    out = tmp_path / f"m{FORMATS[fmt].suffix}"
    with pytest.raises(ExportError) as err:
        export_model(fmt, model.eval(), torch.zeros(1, 1, 8, 8), out, _options())
    assert err.value.exit_code == 2
    assert "layer 'body.mystery'" in str(err.value) and "edgekd_test" in str(err.value)
    assert not list(tmp_path.iterdir()), "nothing is left behind"


@pytest.mark.parametrize("name", ["student.onnx", "student.tflite"])
def test_truncated_model_file_is_exit_2_not_a_crash(exported, tmp_path, name):
    broken = tmp_path / name
    broken.write_bytes((exported[0] / "export" / name).read_bytes()[:1000])
    with pytest.raises(ExportError) as err:
        run("onnx", broken, exported[2]) if name.endswith(".onnx") else run("tflite", broken, exported[2], "nhwc")
    assert err.value.exit_code == 2 and name in str(err.value)


def test_rerun_skips_export_and_a_layout_change_reexports_only(exported):
    run_dir = exported[0]
    again = run_pipeline(load_config(DIGITS, SETTINGS), run_dir, until="export")
    assert again.ran == [] and len(again.skipped) == 5
    nchw = run_pipeline(load_config(DIGITS, [*SETTINGS, "export.tflite_layout='nchw'", "export.models=['student']",
                                             "export.formats=['tflite']"]), run_dir, until="export")
    assert nchw.ran == ["export"]
    interp = Interpreter(model_path=str(run_dir / "export" / "student.tflite"))
    assert list(interp.get_input_details()[0]["shape"]) == [1, 1, 8, 8]
    sidecar = json.loads((run_dir / "export" / "student.tflite.json").read_text())
    assert sidecar["input"]["layout"] == "nchw" and sidecar["normalization"]["pixel_max"] == 16.0


# what each format must read back as, op by op, whatever the architecture
EXPECTED_AUDIT = {
    "onnx": {"kind": "float", "weight_dtypes": ["float32"], "weight_bits": None},
    "onnx_int8": {"kind": "full-integer", "weight_dtypes": ["int8"], "weight_bits": 7, "float_ops": [],
                  "granularity": "per-channel", "input_dtype": "float32"},
    "tflite": {"kind": "float", "weight_dtypes": ["float32"], "weight_bits": None},
    "tflite_fp16": {"kind": "weight-only", "weight_dtypes": ["float16"], "weight_bits": None},
    "tflite_int8": {"kind": "full-integer", "weight_dtypes": ["int8"], "weight_bits": 8, "float_ops": [],
                    "granularity": "per-channel", "input_dtype": "int8", "output_dtype": "int8"},
    "pte": {"kind": "float", "weight_dtypes": ["float32"], "weight_bits": None, "not_delegated": []},
    # XNNPACK's weights are read from its graph's value types, not their bytes: no weight_bits
    "pte_int8": {"kind": "full-integer", "weight_dtypes": ["int8"], "float_ops": [], "not_delegated": [],
                 "granularity": "per-channel", "input_dtype": "float32", "output_dtype": "float32"},
}


@pytest.fixture(scope="module")
def mlp_files(tmp_path_factory):
    """A third architecture, exported directly: an MLP (no convolution, no BatchNorm)."""
    from edgekd.models import ModelSpec, build_model

    torch.manual_seed(SEED)
    model = build_model(ModelSpec("mlp", (1, 8, 8), 10, {"hidden": [32, 16]}))
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    out = tmp_path_factory.mktemp("mlp")
    return {fmt: export_model(fmt, model, torch.zeros(1, 1, 8, 8), out / f"mlp{FORMATS[fmt].suffix}",
                               ExportOptions(x, rng.integers(0, 10, 64), calibration_x=x)).audit for fmt in FORMATS}


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("model", ["teacher", "student", "mlp"])  # cnn + BatchNorm; residual + depthwise + GAP; MLP
def test_audit_reads_what_each_file_is_op_by_op(exported, mlp_files, model, fmt):
    audit = (mlp_files[fmt] if model == "mlp" else
             {a["file"]: a["audit"] for a in exported[1].artifacts}[f"export/{model}{FORMATS[fmt].suffix}"])
    for key, value in EXPECTED_AUDIT[fmt].items():
        assert audit[key] == value, f"{model} {fmt}: {key} = {audit[key]!r}, expected {value!r}; audit: {audit}"
    if audit["kind"] in ("float", "weight-only"):  # every compute op of these runs in float, and the audit names them
        assert audit["float_ops"] and "DEQUANTIZE" not in audit["float_ops"], audit
