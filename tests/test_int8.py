"""int8: files that cannot saturate on x86 without VNNI, and a drop check that judges what the eval set resolves."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from edgekd.export.formats import ExportOptions
from edgekd.export.driver import export_model
from edgekd.export.parity import Parity, int8_drop_check
from edgekd.pipeline.cli import main
from tests.helpers import SEED

ROOT = Path(__file__).resolve().parents[1]
QEMU = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")


def _saturating_model() -> nn.Module:
    """Class 0 sums 63 inputs at full weight; class 1 sums them at half weight plus a bias of 5.

    On inputs near 1, uint8 activations are ~255 and class 0's int8 weights are 127: a pair of products
    is 2 x 255 x 127 = 64770, which VPMADDUBSW (onnxruntime's x86 int8 kernel without VNNI) saturates
    at 32767. Class 0's logit then comes out about half its value (32 instead of 63) and loses to class
    1 (36.5): 50 % accuracy. With weights within ±64 a pair stays below 32767 and nothing saturates.
    """
    fc = nn.Linear(64, 2)
    with torch.no_grad():
        fc.weight[0] = 1.0
        fc.weight[1] = 0.5
        fc.weight[:, 63] = 1.0  # input 63 is always 0: sets class 1's scale, so its other weights use half the range
        fc.bias[:] = torch.tensor([0.0, 5.0])
    return nn.Sequential(nn.Flatten(), fc).eval()


def _saturating_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = np.concatenate([1 - 0.02 * rng.random((100, 64)), 0.1 + 0.02 * rng.random((100, 64))]).astype(np.float32)
    x[:, 63] = 0
    return x.reshape(200, 1, 8, 8), np.repeat([0, 1], 100)


def _int8_weights(path: Path) -> list[np.ndarray]:
    """The stored int8 tensors that DequantizeLinear turns into weights (not the activations' zero points)."""
    graph = onnx.load(str(path)).graph
    init = {t.name: t for t in graph.initializer}
    return [numpy_helper.to_array(init[n.input[0]]) for n in graph.node if n.op_type == "DequantizeLinear"
            and n.input[0] in init and init[n.input[0]].data_type == onnx.TensorProto.INT8]


@pytest.fixture(scope="module")
def saturation_files(tmp_path_factory):
    x, y = _saturating_data()
    out = tmp_path_factory.mktemp("sat")
    results = {}
    for reduce_range in (True, False):
        path = out / f"m{'7' if reduce_range else '8'}.int8.onnx"
        results[reduce_range] = export_model("onnx_int8", _saturating_model(), torch.zeros(1, 1, 8, 8), path,
                                                       ExportOptions(x, y, calibration_x=x, onnx_reduce_range=reduce_range))
    np.savez(out / "eval.npz", x=x, y=y)
    return out, results


def test_int8_onnx_weights_cannot_saturate_and_keep_accuracy_here(saturation_files):
    _, results = saturation_files
    default = results[True]  # export.onnx_reduce_range defaults to true
    assert max(int(np.abs(w.astype(np.int16)).max()) for w in _int8_weights(default.path)) <= 64
    assert default.audit["weight_bits"] == 7 and results[False].audit["weight_bits"] == 8
    assert default.parity.reference_accuracy == 1.0
    assert default.parity.accuracy == 1.0  # on this machine's CPU, whatever its int8 kernels


@pytest.mark.skipif(QEMU is None, reason="needs qemu-user-static (installed by .ci/run) to emulate a CPU without VNNI")
def test_on_an_emulated_cpu_without_vnni_8_bit_weights_saturate_and_7_bit_do_not(saturation_files):
    out, _ = saturation_files
    code = ("import sys, numpy as np, onnxruntime as ort\n"
            "f = np.load(sys.argv[1])\n"
            "for m in sys.argv[2:]:\n"
            "    p = ort.InferenceSession(m, providers=['CPUExecutionProvider']).run(None, {'input': f['x']})[0]\n"
            "    print((p.argmax(1) == f['y']).mean())\n")
    proc = subprocess.run([QEMU, "-cpu", "Haswell", sys.executable, "-c", code, str(out / "eval.npz"),
                           str(out / "m7.int8.onnx"), str(out / "m8.int8.onnx")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seven, eight = (float(v) for v in proc.stdout.split())
    assert seven == 1.0, "7-bit weights must not saturate on AVX2 without VNNI"
    assert eight <= 0.6, f"the model is built to saturate 8-bit weights there (got {eight})"


@pytest.mark.parametrize("lost, gained, n, verdict", [
    (5, 1, 359, "cannot tell"),  # 1.11 points on digits: the interval reaches below 0 and above 1 point
    (12, 1, 1000, "cannot tell"),  # 1.10 points, interval 0.40..1.97: kept with a warning
    (40, 0, 1000, "fail"),  # 4 points, interval 2.88..5.38: beyond the limit
    (0, 0, 1000, "pass"),
])
def test_int8_drop_check_uses_the_paired_rule(lost, gained, n, verdict):
    ref = round(0.98 * n)
    parity = Parity(1.0, 0.0, 0.0, n, (ref - lost + gained) / n, ref / n, lost, gained)
    check = int8_drop_check(parity, max_drop=0.01)
    assert check.drop == pytest.approx((lost - gained) / n)
    assert check.verdict == verdict
    lo, hi = check.ci95
    assert lo <= check.drop <= hi


def test_a_quantization_that_breaks_the_model_exits_1_and_keeps_the_best_file(tmp_path, capsys):
    """QuantFragile loses about 30 points in int8 ONNX: a drop no eval set can mistake for noise. The
    file is kept with its numbers (never leave the user with nothing), and the message says it is not enough."""
    args = ["run", str(ROOT / "configs" / "digits.toml"), "--out", str(tmp_path / "r"), "--until", "export",
            "--set", "teacher.train.epochs=1", "--set", "student.train.epochs=5", "--set", f"run.seed={SEED}",
            "--set", "student.arch=tests.user_models:QuantFragile", "--set", "student.kwargs={}",
            "--set", "export.models=['student']", "--set", "export.formats=['onnx', 'onnx_int8']",
            "--set", "export.int8_method=ptq", "--set", "export.int8_fallback=false"]
    assert main(args) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "student.int8.onnx: the best int8 file found (ptq; tried: ptq" in err and "is kept, but not enough" in err
    assert "beyond the limit" in err and "export.int8_method = 'auto' or 'qat'" in err and "export.int8_fallback" in err
    export = tmp_path / "r" / "export"
    sidecar = json.loads((export / "student.int8.onnx.json").read_text())
    assert sidecar["int8_check"]["verdict"] == "fail" and sidecar["int8_method"] == "ptq"
    assert sidecar["parity"]["accuracy"] < sidecar["parity"]["reference_accuracy"] - 0.1
    assert (export / "student.int8.onnx").exists() and (export / "student.onnx").exists()


def test_nan_logits_fail_parity_with_a_message():
    """`NaN > 1e-3` is False: without an explicit check a NaN model would pass every tolerance."""
    from edgekd.errors import ParityError
    from edgekd.export.parity import compare

    ref = np.zeros((4, 3), np.float32)
    bad = ref.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ParityError, match=r"student.onnx: student.onnx gives NaN or infinite logits on 1 of 4"):
        compare(bad, ref, np.zeros(4, np.int64), "student.onnx")
    with pytest.raises(ParityError, match="the PyTorch model gives NaN"):
        compare(ref, bad, np.zeros(4, np.int64), "student.onnx")
    assert compare(ref, ref, np.zeros(4, np.int64)).max_abs_diff == 0
