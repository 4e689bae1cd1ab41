"""The adb target: benchmark_model output of both generations (latency, peak memory), device states,
and its environment errors with the real adb client (skipped, naming adb, where it is absent)."""
import json
import shutil

import pytest

from edgekd.bench.adb import ADBTarget, combine_runs, parse_benchmark_output, parse_devices, parse_op_table
from edgekd.errors import AgentError

NEW = """INFO: The input model file size (MB): 24.6229
INFO: Initialized session in 119.515ms.
INFO: Running benchmark for at least 5 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=9 first=87112 curr=51629 min=51629 max=87112 avg=58147.4 std=11478 p5=51629 median=51962 p95=87112
INFO: Running benchmark for at least 1000 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=1000 first=52162 curr=49785 min=49088 max=686105 avg=63743.2 std=60716 p5=49620 median=51891 p95=68628
INFO: Inference timings in us: Init: 119515, First inference: 87112, Warmup (avg): 58147.4, Inference (avg): 63743.2
INFO: Memory footprint delta from the start of the tool (MB): init=55.4961 overall=55.4961
INFO: Replacing 2136 out of 2168 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 65 partitions.
Overall peak memory footprint (MB) via periodic monitoring: 61.25
"""
OLD = """count=50 first=87112 curr=51629 min=51629 max=87112 avg=58147.4 std=11478
count=200 first=52162 curr=49785 min=49088 max=686105 avg=63743.2 std=60716
Average inference timings in us: Warmup: 58147.4, Init: 119515, Inference: 63743.2
Peak memory footprint (MB): init=55.4961 overall=57.0
"""


def test_benchmark_model_output_of_both_generations():
    new = parse_benchmark_output(NEW)
    assert new["timed"] == {"count": 1000, "first": 52162, "curr": 49785, "min": 49088, "max": 686105, "avg": 63743.2,
                            "std": 60716, "p5": 49620, "median": 51891, "p95": 68628}
    assert new["warmup"]["count"] == 9 and new["init_ms"] == pytest.approx(119.515)
    assert new["first_ms"] == pytest.approx(87.112) and new["memory_mb"] == {"init": 55.4961, "overall": 55.4961}
    assert new["peak_memory_mb"] == 61.25
    assert new["delegated"] == {"nodes": 2136, "of": 2168, "delegate": "TfLiteXNNPackDelegate", "partitions": 65}
    old = parse_benchmark_output(OLD)
    assert old["timed"]["count"] == 200 and "median" not in old["timed"] and old["init_ms"] == pytest.approx(119.515)
    assert old["memory_mb"] == {"init": 55.4961, "overall": 57.0} and old["first_ms"] == pytest.approx(87.112)
    lat = combine_runs([new, new, old])
    assert lat["process_p50"] == [pytest.approx(51.891), pytest.approx(51.891), pytest.approx(63.7432)]
    assert lat["p50"] == pytest.approx(51.891) and lat["p50_from"].startswith("avg")  # the old tool has no median
    assert lat["min"] == pytest.approx(49.088) and lat["n"] == 2200 and lat["p99"] is None


DELTA_ONLY = NEW.replace("Overall peak memory footprint (MB) via periodic monitoring: 61.25\n", "")
NO_MEMORY = "\n".join(ln for ln in DELTA_ONLY.splitlines() if "Memory footprint" not in ln)


@pytest.mark.parametrize("text, peak, source", [
    (NEW, 61.25, "periodic monitoring"),  # preferred over the footprint line printed beside it
    (DELTA_ONLY, 55.4961, "footprint delta from the tool's start"),
    (OLD, 57.0, "peak footprint"),
    (NO_MEMORY, None, None),
], ids=["periodic", "new footprint", "old peak footprint", "none printed"])
def test_benchmark_model_peak_memory(text, peak, source):
    parsed = parse_benchmark_output(text)
    assert (parsed["peak_rss_mb"], parsed["peak_rss_from"]) == (peak, source)


def test_an_adb_row_without_memory_says_null_never_zero(tmp_path):
    """A phone whose benchmark_model printed no memory line has an unmeasured peak: JSON null, which a
    max_peak_rss_mb budget must report as not measured (0.0 would pass any budget)."""
    model = tmp_path / "m.tflite"
    model.write_bytes(b"model")
    host = {"accuracy": 0.75, "n_eval": 4, "correct_bits": "e0", "runtime": "ai_edge_litert", "runtime_version": "2"}
    target = ADBTarget("pixel", "bm")
    row = target._result(model, [parse_benchmark_output(NO_MEMORY)] * 2, 1, True, host)
    assert row["peak_rss_mb"] is None and '"peak_rss_mb": null' in json.dumps(row)
    assert row["model_rss_mb"] is None and row["rss_increase_mb"] is None and row["process_peak_rss_mb"] == [None, None]
    assert row["correct_bits"] == "e0" and row["accuracy"] == 0.75 and row["accuracy_on"] == "host"
    mixed = target._result(model, [parse_benchmark_output(t) for t in (NO_MEMORY, OLD, NEW)], 1, True, host)
    assert mixed["peak_rss_mb"] == 61.25 and mixed["process_peak_rss_mb"] == [None, 57.0, 61.25]


# benchmark_model --enable_op_profiling's two tables in the older layout (no [start] column): its
# initialisation's, then the regular runs', which is the one read
OP_TABLES = """Profiling Info for Benchmark Initialization:
============================== Run Order ==============================
\t             [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t ModifyGraphWithDelegate\t   12.030\t   12.030\t 98.512%\t 98.512%\t  1024.000\t        1\tModifyGraphWithDelegate/0

Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
\t             [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t Delegate/Convolution (NHWC, QC8) IGEMM\t    0.031\t    0.025\t 62.500%\t 62.500%\t     0.000\t      200\t[Delegate]:0
\t                 SOFTMAX\t    0.016\t    0.015\t 37.500%\t100.000%\t     0.000\t      200\t[Identity]:8

============================== Top by Computation Time ==============================
"""


def test_the_op_table_of_the_regular_runs_is_read_with_its_own_columns():
    assert parse_op_table(OP_TABLES) == [
        {"name": "Convolution (NHWC, QC8) IGEMM [Delegate]:0", "op": "Convolution (NHWC, QC8) IGEMM", "us": 25.0},
        {"name": "SOFTMAX [Identity]:8 (not delegated)", "op": "SOFTMAX", "us": 15.0}]
    with pytest.raises(AgentError, match="--enable_op_profiling=true"):
        parse_op_table(NEW)


def test_an_adb_op_profile_sits_beside_the_rows_timed_p50(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"model")
    host = {"accuracy": 0.75, "n_eval": 4, "runtime": "ai_edge_litert", "runtime_version": "2"}
    row = ADBTarget("pixel", "bm")._result(model, [parse_benchmark_output(NEW)] * 3, 1, True, host)
    profile = ADBTarget("pixel", "bm")._profile(NEW + OP_TABLES, row)
    assert [op["us"] for op in profile["ops"]] == [25.0, 15.0] and profile["ops_sum_us"] == 40.0
    assert profile["p50_us"] == 1e3 * row["latency_ms"]["p50"] and profile["runs"] == 1000
    assert profile["profiled_run_us"] == parse_benchmark_output(NEW)["timed"]["median"]


def test_adb_devices_states():
    text = "List of devices attached\nemulator-5554\tdevice\nR58M1234\tunauthorized\n0123\toffline\n\n"
    assert parse_devices(text) == {"emulator-5554": "device", "R58M1234": "unauthorized", "0123": "offline"}


@pytest.mark.parametrize("case, needle", [("no adb", "no adb client; install Android platform-tools"),
                                          ("no binary", "benchmark_binary 'missing/benchmark_model' not found"),
                                          ("no device", "no Android device attached")])
def test_adb_environment_problems_exit_3(tmp_path, case, needle):
    if case != "no adb" and shutil.which("adb") is None:
        pytest.skip("needs the adb client (Debian package adb, installed by .ci/run)")
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    target = ADBTarget("pixel", "missing/benchmark_model" if case == "no binary" else str(binary),
                       adb="adb-not-installed-here" if case == "no adb" else "adb")
    with pytest.raises(AgentError) as err:
        target.prepare()
    assert err.value.exit_code == 3 and needle in str(err.value)


def test_edgekd_bench_on_a_target_that_cannot_run_exits_3(bench_copy, tmp_path, capsys):
    if shutil.which("adb") is None:  # without adb the target stops at "no adb client", before the binary
        pytest.skip("needs adb (Debian package adb, installed by .ci/run)")
    from edgekd.pipeline.cli import main

    (tmp_path / "t.toml").write_text(f'[targets.pixel]\nkind = "adb"\nbenchmark_binary = "{tmp_path}/none"\n')
    assert main(["bench", str(bench_copy), "--targets", str(tmp_path / "t.toml"), "--target", "pixel"]) == 3
    assert "pixel: target pixel: benchmark_binary" in " ".join(capsys.readouterr().err.split())
