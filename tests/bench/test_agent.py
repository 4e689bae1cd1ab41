"""The agent: statistics on known samples, int8 I/O, accuracy vs the runtime used directly, torch-free,
several processes per model, results that name their file; run as one file (agent.pyz) the way a
device runs it, and as `python -m edgekd.bench.agent` the way a checkout does."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekd.bench.agent import pyz
from edgekd.bench.agent.jobs import Job, merge
from edgekd.bench.agent.runtimes.tflite import dequantize, quantize
from edgekd.bench.agent.stats import combine_latency, median_interval, percentiles
from edgekd.bench.agent.worker import Samples

ROOT = Path(__file__).resolve().parents[2]
AGENT = [sys.executable, "-m", "edgekd.bench.agent"]  # as a checkout with edgekd installed runs it


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


def _worker(samples, peak, baseline, **extra):
    return {"sha256": "0" * 64, "runtime": "r", "runtime_version": "1", "threads": 1, "init_ms": 1.0, "first_ms": 2.0,
            "samples_ms": samples, "peak_rss_mb": peak, "runtime_rss_mb": baseline, "started_at": 1.0,
            "ended_at": 2.0, **extra}


def test_a_row_is_runtime_baseline_plus_model_and_keeps_the_samples_of_its_percentiles():
    rng = np.random.default_rng(1)
    samples = [list(rng.gamma(4, 0.01, n).round(6) + 0.1) for n in (3000, 2000, 2500)]
    job = Job("m.tflite", [], [_worker(samples[0], 50.0, 45.5, accuracy=0.5, n_eval=4, correct_bits="a0"),
                               _worker(samples[1], 52.25, 46.0), _worker(samples[2], 49.0, 44.0)])
    row = merge(job, "t")
    assert row["process_peak_rss_mb"] == [50.0, 52.25, 49.0] and row["process_runtime_rss_mb"] == [45.5, 46.0, 44.0]
    assert row["peak_rss_mb"] == 52.25 and row["runtime_rss_mb"] == 45.5  # the largest peak, the median baseline
    assert row["model_rss_mb"] == 6.25 == row["rss_increase_mb"]  # the largest peak - baseline of one process
    assert row["accuracy"] == 0.5 and row["n_eval"] == 4 and row["correct_bits"] == "a0"
    # 3 processes x 2,000 (the shortest) pooled: 6,000 samples, kept as 5,000 evenly spaced ones
    assert row["latency_ms"]["n"] == 6000 and len(row["samples_ms"]) == 5000
    # under 5,000: exactly the pool (400 per process, as the shortest has), so every percentile recomputes
    small = merge(Job("m", [], [_worker(s[:n], 50.0, 45.0) for s, n in zip(samples, (1000, 400, 700))]), "t")
    again = percentiles(small["samples_ms"])
    assert len(small["samples_ms"]) == small["latency_ms"]["n"] == 1200
    assert all(again[k] == small["latency_ms"][k] for k in ("p50", "p90", "p95", "p99", "mean", "std", "min", "max"))


def test_a_worker_without_a_baseline_gives_no_model_part():
    """A peak minus an unknown start is not the model's memory: None, never a made-up number."""
    old = [{**_worker([1.0] * 10, 60.0, None)} for _ in range(2)]
    for w in old:
        del w["runtime_rss_mb"]
    row = merge(Job("m", [], old), "t")
    assert row["peak_rss_mb"] == 60.0 and row["runtime_rss_mb"] is None and row["model_rss_mb"] is None
    assert row["rss_increase_mb"] is None and row["accuracy"] is None and "correct_bits" not in row


def test_samples_stay_evenly_spaced_in_a_fixed_buffer():
    s = Samples(capacity=8)
    buffer = s.buf
    for i in range(37):
        s.add(float(i))
    assert s.values() == [0.0, 8.0, 16.0, 24.0, 32.0] and s.runs == 37 and s.buf is buffer  # no new allocation
    s = Samples(capacity=8)
    for i in range(8):
        s.add(float(i))
    assert s.values() == [float(i) for i in range(8)]


@pytest.fixture(scope="module")
def blocker(tmp_path_factory):
    """A directory whose `torch` package raises on import: put first on PYTHONPATH to prove torch is unused."""
    root = tmp_path_factory.mktemp("block")
    for name in ("torch", "edgekd"):  # on a device the agent runs with no edgekd package but its own
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked in this test')\n")
    return root


@pytest.fixture(scope="module")
def agent_pyz(tmp_path_factory) -> Path:
    return pyz.build(tmp_path_factory.mktemp("pyz") / "agent.pyz")


def _agent(args, blocker, agent_pyz):
    """The agent as a device runs it: one file, with only `blocker` on the path besides the interpreter's own."""
    env = {"PYTHONPATH": str(blocker), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(agent_pyz), *map(str, args)], capture_output=True, text=True, env=env)


QUICK = ["--processes", 3, "--min-runs", 20, "--min-seconds", 0.02, "--warmup", 2]


@pytest.mark.parametrize("name", ["student.int8.tflite", "student.onnx"])
def test_agent_accuracy_equals_direct_runtime_evaluation(bench_run, blocker, agent_pyz, tmp_path, name):
    run_dir = bench_run
    model, eval_path = run_dir / "export" / name, run_dir / "data" / "eval.npz"
    proc = _agent([model, "--eval", eval_path, *QUICK, "-o", tmp_path / "r.json"], blocker, agent_pyz)
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
    correct = logits.argmax(1) == y
    assert result["accuracy"] == pytest.approx(float(correct.mean()), abs=1e-9)
    # which samples it got right, in eval-set order: exactly the direct runtime's, and exactly the accuracy
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(result["correct_bits"]), np.uint8))
    assert len(bits) == 8 * ((len(y) + 7) // 8) and not bits[len(y):].any()
    assert np.array_equal(bits[:len(y)].astype(bool), correct) and result["accuracy"] == bits.sum() / len(y)
    assert result["artifact"] == f"export/{name}" and result["n_eval"] == len(y) and result["threads"] == 1
    assert result["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    lat = result["latency_ms"]
    assert lat["processes"] == 3 and len(lat["process_p50"]) == 3
    assert lat["n"] >= 3 * 20 and 0 < lat["min"] <= lat["p50"] <= lat["p95"] <= lat["max"]
    assert lat["p50_ci95"] == [min(lat["process_p50"]), max(lat["process_p50"])]
    # samples_ms are exactly the samples the percentiles came from (fewer than 5,000 here: all of them)
    assert lat["n"] == len(result["samples_ms"]) or len(result["samples_ms"]) == 5000
    if lat["n"] <= 5000:
        again = percentiles(result["samples_ms"])
        assert all(again[k] == pytest.approx(lat[k], abs=1e-6) for k in ("p50", "p90", "p95", "p99", "mean", "min", "max"))
    _assert_memory_means_its_label(result, processes=3)
    assert result["started_at"] < result["ended_at"]


def _assert_memory_means_its_label(result, processes):
    """Runtime baseline + model part, per process and per row, and a model part that is the model's alone."""
    peaks, baselines = result["process_peak_rss_mb"], result["process_runtime_rss_mb"]
    assert len(peaks) == len(baselines) == processes
    assert result["peak_rss_mb"] == max(peaks) and result["runtime_rss_mb"] == pytest.approx(float(np.median(baselines)))
    assert result["model_rss_mb"] == pytest.approx(max(p - b for p, b in zip(peaks, baselines)), abs=1e-9)
    assert result["rss_increase_mb"] == result["model_rss_mb"]
    # python + numpy + the runtime, its no-op run and the eval set: tens of MB (30-70 here), never the model
    assert 20 < result["runtime_rss_mb"] < 150
    # the model's own part of a file of a few (tens of) KiB: positive, and well under 2 MB (it was 16.5 MB
    # when the baseline was read before the runtime was imported; measured 0.4-0.8 MB here)
    assert 0 < result["model_rss_mb"] < 2.0
    # peak = runtime baseline + model part, up to how much the processes' baselines differ (0.1 MB here)
    assert abs(result["runtime_rss_mb"] + result["model_rss_mb"] - result["peak_rss_mb"]) < 0.5


def test_agent_corrupt_model_exits_2_with_its_name(blocker, agent_pyz, tmp_path, bench_run):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes((bench_run / "export" / "student.int8.tflite").read_bytes()[:500])
    proc = _agent([broken, *QUICK], blocker, agent_pyz)
    assert proc.returncode == 2 and "broken.tflite" in proc.stderr and "Traceback" not in proc.stderr


def test_agent_missing_runtime_exits_3(agent_pyz, tmp_path, bench_run):
    block = tmp_path / "noort"
    (block / "onnxruntime").mkdir(parents=True)
    (block / "onnxruntime" / "__init__.py").write_text("raise ImportError('not installed')\n")
    proc = _agent([bench_run / "export" / "student.onnx", *QUICK], block, agent_pyz)
    assert proc.returncode == 3 and "pip install onnxruntime" in proc.stderr


def test_packed_bundle_runs_on_the_agent(bench_run, blocker, agent_pyz, tmp_path):
    import zipfile

    from edgekd.pipeline.cli import main

    bundle = tmp_path / "bundle.zip"
    assert main(["pack", str(bench_run), "-o", str(bundle)]) == 0
    assert sorted(zipfile.ZipFile(bundle).namelist()) == [
        "agent.pyz", "bundle.json", "data/eval.npz", "export/student.int8.tflite", "export/student.int8.tflite.json",
        "export/student.onnx", "export/student.onnx.json"]
    listing = json.loads(zipfile.ZipFile(bundle).read("bundle.json"))["files"]
    # the same sources give the same bytes
    assert listing["agent.pyz"]["sha256"] == hashlib.sha256(agent_pyz.read_bytes()).hexdigest()
    # on the "device": only the bundle's own agent.pyz, with torch, pipeline and an installed edgekd unimportable
    device = tmp_path / "device"
    device.mkdir()
    zipfile.ZipFile(bundle).extract("agent.pyz", device)
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, str(device / "agent.pyz"), str(bundle), "--target", "pi4",
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


def test_a_device_with_one_runtime_measures_what_it_can(bench_run, agent_pyz, tmp_path):
    """Only LiteRT on the device: the .tflite files are measured, the ONNX ones skipped with the reason."""
    from edgekd.pipeline.cli import main

    bundle = tmp_path / "b.zip"
    assert main(["pack", str(bench_run), "-o", str(bundle)]) == 0
    block = tmp_path / "no-ort"
    (block / "onnxruntime").mkdir(parents=True)
    (block / "onnxruntime" / "__init__.py").write_text("raise ImportError('not on this device')\n")
    out = tmp_path / "r.json"
    proc = _agent([bundle, *QUICK, "-o", out], block, agent_pyz)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert [r["artifact"] for r in doc["results"]] == ["export/student.int8.tflite"]
    assert doc["skipped"] == [{"artifact": "export/student.onnx", "reason": "no ONNX runtime: pip install onnxruntime"}]
    assert "skipped export/student.onnx" in proc.stderr
    only_onnx = _agent([bench_run / "export" / "student.onnx", *QUICK], block, agent_pyz)
    assert only_onnx.returncode == 3 and "nothing could be measured" in only_onnx.stderr


def test_pack_can_bundle_only_the_formats_a_device_runs(bench_run, tmp_path, capsys):
    import zipfile

    from edgekd.pipeline.cli import main

    bundle = tmp_path / "b.zip"
    assert main(["pack", str(bench_run), "-o", str(bundle), "--formats", "tflite_int8"]) == 0
    assert sorted(zipfile.ZipFile(bundle).namelist()) == ["agent.pyz", "bundle.json", "data/eval.npz",
                                                          "export/student.int8.tflite", "export/student.int8.tflite.json"]
    assert main(["pack", str(bench_run), "-o", str(bundle), "--formats", "tflite_fp16"]) == 2
    assert "no exported file of format tflite_fp16" in " ".join(capsys.readouterr().err.split())


def _dense_tflite(path: Path, inputs: int, outputs: int) -> int:
    """A float32 FULLY_CONNECTED model with an (outputs, inputs) weight matrix; its weight bytes."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    weights = np.random.default_rng(0).standard_normal((outputs, inputs)).astype(np.float32)
    model, code, graph, op = s.ModelT(), s.OperatorCodeT(), s.SubGraphT(), s.OperatorT()
    model.version, model.buffers = 3, [s.BufferT(), s.BufferT()]
    model.buffers[1].data = weights.tobytes()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.FULLY_CONNECTED
    code.version, model.operatorCodes = 1, [code]

    def tensor(name, shape, buffer):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, shape, s.TensorType.FLOAT32, buffer
        return t
    graph.tensors = [tensor("x", [1, inputs], 0), tensor("w", [outputs, inputs], 1), tensor("y", [1, outputs], 0)]
    graph.inputs, graph.outputs = [0], [2]
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, -1], [2]
    op.builtinOptionsType, op.builtinOptions = s.BuiltinOptions.FullyConnectedOptions, s.FullyConnectedOptionsT()
    graph.operators, model.subgraphs = [op], [graph]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return weights.nbytes


def test_the_model_part_grows_with_the_model_and_the_runtime_part_does_not(blocker, agent_pyz, tmp_path):
    """Two models, 16 KiB and 16 MiB of weights, on the same runtime: the baselines agree to 1 MB and the
    model parts differ by at least the weights (LiteRT maps the file and XNNPACK repacks the weights)."""
    small, big = tmp_path / "small.tflite", tmp_path / "big.tflite"
    small_bytes, big_bytes = _dense_tflite(small, 64, 64), _dense_tflite(big, 2048, 2048)
    assert (small_bytes, big_bytes) == (16 * 1024, 16 * 1024 * 1024)
    proc = _agent([small, big, "--processes", 2, "--min-runs", 5, "--min-seconds", 0, "--warmup", 1,
                   "-o", tmp_path / "r.json"], blocker, agent_pyz)
    assert proc.returncode == 0, proc.stderr
    rows = {r["artifact"]: r for r in json.loads((tmp_path / "r.json").read_text())["results"]}
    s, b = rows["small.tflite"], rows["big.tflite"]
    assert abs(s["runtime_rss_mb"] - b["runtime_rss_mb"]) < 1.0
    assert 0 < s["model_rss_mb"] < 2.0
    assert 16 <= b["model_rss_mb"] - s["model_rss_mb"] <= 3 * 16 + 2  # mapped, repacked, and no more
