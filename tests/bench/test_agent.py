"""The agent: statistics on known samples, int8 I/O, accuracy vs the runtime used directly, torch-free,
several processes per model, results that name their file."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekd.bench.agent import combine_latency, dequantize, median_interval, percentiles, quantize

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "bench" / "agent.py"


def test_percentiles_on_known_samples():
    s = percentiles(list(range(1, 101)))  # 1..100 ms
    assert s["p50"] == pytest.approx(50.5) and s["p90"] == pytest.approx(90.1)
    assert s["p95"] == pytest.approx(95.05) and s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5) and s["min"] == 1 and s["max"] == 100 and s["n"] == 100
    assert s["std"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))


def test_median_interval_from_order_statistics():
    # 5 values: only the full range, covering 1 - 2/32 = 93.75 %
    assert median_interval([5, 1, 4, 2, 3]) == (1.0, 5.0, pytest.approx(0.9375))
    # 10 values: [2nd, 9th] covers 1 - 2 * 11/1024 = 97.85 %; [3rd, 8th] would cover only 89 %
    assert median_interval(range(1, 11)) == (2.0, 9.0, pytest.approx(1 - 22 / 1024))
    rng = np.random.default_rng(0)
    covered = sum(lo <= 0.0 <= hi for lo, hi, _ in (median_interval(rng.normal(0, 1, 12)) for _ in range(400)))
    assert covered >= 0.95 * 400 - 4 * np.sqrt(400 * 0.05 * 0.95)  # the stated coverage, within sampling noise


def test_processes_count_equally_and_keep_their_medians():
    fast, slow = [1.0] * 1000, [2.0] * 10  # a fast process times many more runs in the same seconds
    lat = combine_latency([fast, slow])
    assert lat["process_p50"] == [1.0, 2.0] and lat["processes"] == 2
    assert lat["n"] == 20 and lat["p50"] == pytest.approx(1.5)  # 10 samples from each, not 1000 : 10
    assert lat["p50_ci95"] == [1.0, 2.0]


def test_int8_quantization_round_trip():
    x = np.linspace(-2.0, 2.0, 101, dtype=np.float32)
    scale, zero = 0.01, -3  # ±2.0 maps to -203..197: both ends must clip
    q = quantize(x, scale, zero, np.int8)
    assert q.dtype == np.int8
    back = dequantize(q, scale, zero)
    inside = (x / scale + zero >= -128) & (x / scale + zero <= 127)
    assert np.abs(back - x)[inside].max() <= scale / 2 + 1e-6
    assert q.min() == -128 and q.max() == 127  # out-of-range values clip instead of wrapping


@pytest.fixture(scope="module")
def blocker(tmp_path_factory):
    """A directory whose `torch` package raises on import: put first on PYTHONPATH to prove torch is unused."""
    root = tmp_path_factory.mktemp("block")
    for name in ("torch", "edgekd"):  # on a device the agent runs with no edgekd package at all
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked in this test')\n")
    return root


def test_bench_package_imports_without_torch_or_pipeline():
    """Every module of edgekd.bench imports in a fresh interpreter without pulling in torch or edgekd.pipeline."""
    modules = sorted(f"edgekd.bench.{p.stem}" for p in (ROOT / "bench").glob("*.py") if p.stem != "__init__")
    code = (f"import sys, importlib\nfor m in {modules!r}: importlib.import_module(m)\n"
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'edgekd.pipeline', 'edgekd.export'))]\n"
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _agent(args, blocker):
    env = {"PYTHONPATH": str(blocker), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(AGENT), *map(str, args)], capture_output=True, text=True, env=env)


QUICK = ["--processes", 3, "--min-runs", 20, "--min-seconds", 0.02, "--warmup", 2]


@pytest.mark.parametrize("name", ["student.int8.tflite", "student.onnx"])
def test_agent_accuracy_equals_direct_runtime_evaluation(bench_run, blocker, tmp_path, name):
    run_dir = bench_run
    model, eval_path = run_dir / "export" / name, run_dir / "data" / "eval.npz"
    proc = _agent([model, "--eval", eval_path, *QUICK, "-o", tmp_path / "r.json"], blocker)
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads((tmp_path / "r.json").read_text())["results"]
    with np.load(eval_path) as f:
        x, y = f["x"], f["y"]
    if name.endswith(".onnx"):
        import onnxruntime as ort
        logits = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    else:  # int8 in and out, NHWC: the quantization parameters come from the interpreter, not our sidecar
        from ai_edge_litert.interpreter import Interpreter
        interp = Interpreter(model_path=str(model))
        interp.allocate_tensors()
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        (s_in, z_in), (s_out, z_out) = inp["quantization"], out["quantization"]
        logits = []
        for sample in x.transpose(0, 2, 3, 1):
            interp.set_tensor(inp["index"], np.clip(np.round(sample[None] / s_in) + z_in, -128, 127).astype(np.int8))
            interp.invoke()
            logits.append((interp.get_tensor(out["index"]).astype(np.float32) - z_out) * s_out)
        logits = np.concatenate(logits)
    assert result["accuracy"] == pytest.approx(float((logits.argmax(1) == y).mean()), abs=1e-9)
    assert result["artifact"] == f"export/{name}" and result["n_eval"] == len(y) and result["threads"] == 1
    assert result["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    lat = result["latency_ms"]
    assert lat["processes"] == 3 and len(lat["process_p50"]) == 3
    assert lat["n"] >= 3 * 20 and 0 < lat["min"] <= lat["p50"] <= lat["p95"] <= lat["max"]
    assert lat["p50_ci95"] == [min(lat["process_p50"]), max(lat["process_p50"])]
    assert result["peak_rss_mb"] > 10 and result["rss_increase_mb"] >= 0
    assert result["started_at"] < result["ended_at"]


def test_agent_corrupt_model_exits_2_with_its_name(blocker, tmp_path, bench_run):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes((bench_run / "export" / "student.int8.tflite").read_bytes()[:500])
    proc = _agent([broken, *QUICK], blocker)
    assert proc.returncode == 2 and "broken.tflite" in proc.stderr and "Traceback" not in proc.stderr


def test_agent_missing_runtime_exits_3(tmp_path, bench_run):
    block = tmp_path / "noort"
    (block / "onnxruntime").mkdir(parents=True)
    (block / "onnxruntime" / "__init__.py").write_text("raise ImportError('not installed')\n")
    proc = _agent([bench_run / "export" / "student.onnx", *QUICK], block)
    assert proc.returncode == 3 and "pip install onnxruntime" in proc.stderr


def test_packed_bundle_runs_on_the_agent(bench_run, blocker, tmp_path):
    import zipfile

    from edgekd.pipeline.cli import main

    bundle = tmp_path / "bundle.zip"
    assert main(["pack", str(bench_run), "-o", str(bundle)]) == 0
    assert sorted(zipfile.ZipFile(bundle).namelist()) == [
        "agent.py", "bundle.json", "data/eval.npz", "export/student.int8.tflite", "export/student.int8.tflite.json",
        "export/student.onnx", "export/student.onnx.json"]
    # on the "device": only the bundle's own agent.py, with torch and pipeline unimportable
    device = tmp_path / "device"
    device.mkdir()
    zipfile.ZipFile(bundle).extract("agent.py", device)
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, str(device / "agent.py"), str(bundle), "--target", "pi4",
                           *map(str, QUICK), "-o", str(out)], capture_output=True, text=True,
                          env={"PYTHONPATH": str(blocker), "PATH": "/usr/bin:/bin"}, cwd=device)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert results["schema"] == "edgekd.bench/1" and results["target"] == "pi4"
    report = {r["artifact"]: r for r in json.loads((bench_run / "report.json").read_text())["results"]}
    assert sorted(r["artifact"] for r in results["results"]) == ["export/student.int8.tflite", "export/student.onnx"]
    for r in results["results"]:  # same files, same eval set: the same accuracy and hash as measured locally
        assert r["target"] == "pi4" and r["accuracy"] == report[r["artifact"]]["accuracy"]
        assert r["sha256"] == report[r["artifact"]]["sha256"]


def test_a_device_with_one_runtime_measures_what_it_can(bench_run, tmp_path):
    """Only LiteRT on the device: the .tflite files are measured, the ONNX ones skipped with the reason."""
    from edgekd.pipeline.cli import main

    bundle = tmp_path / "b.zip"
    assert main(["pack", str(bench_run), "-o", str(bundle)]) == 0
    block = tmp_path / "no-ort"
    (block / "onnxruntime").mkdir(parents=True)
    (block / "onnxruntime" / "__init__.py").write_text("raise ImportError('not on this device')\n")
    out = tmp_path / "r.json"
    proc = _agent([bundle, *QUICK, "-o", out], block)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert [r["artifact"] for r in doc["results"]] == ["export/student.int8.tflite"]
    assert doc["skipped"] == [{"artifact": "export/student.onnx", "reason": "no ONNX runtime: pip install onnxruntime"}]
    assert "skipped export/student.onnx" in proc.stderr
    only_onnx = _agent([bench_run / "export" / "student.onnx", *QUICK], block)
    assert only_onnx.returncode == 3 and "nothing could be measured" in only_onnx.stderr


def test_pack_can_bundle_only_the_formats_a_device_runs(bench_run, tmp_path, capsys):
    import zipfile

    from edgekd.pipeline.cli import main

    bundle = tmp_path / "b.zip"
    assert main(["pack", str(bench_run), "-o", str(bundle), "--formats", "tflite_int8"]) == 0
    assert sorted(zipfile.ZipFile(bundle).namelist()) == ["agent.py", "bundle.json", "data/eval.npz",
                                                          "export/student.int8.tflite", "export/student.int8.tflite.json"]
    assert main(["pack", str(bench_run), "-o", str(bundle), "--formats", "tflite_fp16"]) == 2
    assert "no exported file of format tflite_fp16" in " ".join(capsys.readouterr().err.split())
