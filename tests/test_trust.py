"""Every number is about the files that are there: stale rows, a gate that never passes on nothing,
results that agree with their own samples, records that cannot be edited unseen, failed targets that
leave nothing behind."""
import json
import sys

import pytest

from edgekd.fileio import sha256_file
from edgekd.pipeline.cli import main
from tests.helpers import FAST_BENCH, ROOT


def _sets(pairs):
    return [arg for pair in pairs for arg in ("--set", pair)]


def _report(run):
    return json.loads((run / "report.json").read_text())


def test_a_reexport_after_a_device_bench_leaves_no_stale_row(bench_copy, tmp_path, capsys):
    """The sequence of the issue: bench on a second target, then re-run with another temperature (which
    re-exports the student). The second target's rows of the old files are listed as stale, never used."""
    targets = tmp_path / "t.toml"
    targets.write_text(f'[targets.pi]\nkind = "command"\nprefix = ["{sys.executable}"]\nprocesses = 2\n')
    assert main(["bench", str(bench_copy), "--targets", str(targets), "--target", "pi"]) == 0
    assert {r["target"] for r in _report(bench_copy)["results"]} == {"local", "pi"}
    assert main(["run", str(ROOT / "configs" / "digits.toml"), "--out", str(bench_copy), *_sets(FAST_BENCH),
                 "--set", "distill.temperature=8"]) == 0
    report = _report(bench_copy)
    current = {a["file"]: a["sha256"] for a in report["artifacts"]}
    current["student.pt"] = sha256_file(bench_copy / "student.pt")
    assert report["results"] and all(r["sha256"] == current[r["artifact"]] for r in report["results"])
    assert {r["target"] for r in report["results"]} == {"local"}  # every pi row measured the old files
    assert {(s["target"], s["artifact"]) for s in report["stale"]} == {("pi", "export/student.onnx"),
                                                                        ("pi", "export/student.int8.tflite")}
    assert set(report["recommendations"]) == {"local"}
    md = (bench_copy / "report.md").read_text()
    assert "## Stale results (not used)" in md and "`edgekd bench RUN --target pi`" in md
    budgets = tmp_path / "b.toml"
    budgets.write_text('[[budget]]\ntarget = "pi"\nartifact = "*"\nmax_p95_ms = 1000\n')
    capsys.readouterr()
    assert main(["gate", str(bench_copy / "report.json"), "--budgets", str(budgets)]) == 2  # no fresh pi row to gate
    assert "match no result" in capsys.readouterr().err


def test_gate_of_a_report_against_itself_passes_and_against_a_stranger_exits_2(bench_run, tmp_path, capsys):
    budgets = tmp_path / "b.toml"
    budgets.write_text("[regression]\nmax_latency_increase = 0.10\ninconclusive = \"fail\"\n")
    report = bench_run / "report.json"
    for _ in range(3):
        assert main(["gate", str(report), "--budgets", str(budgets), "--baseline", str(report)]) == 0
    out = capsys.readouterr().out
    assert "the same file, runtime and machine as the baseline" in out and "FAIL" not in out
    stranger = json.loads(report.read_text())
    for r in stranger["results"]:
        r["target"] = "elsewhere"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "report.json").write_text(json.dumps(stranger))
    assert main(["gate", str(report), "--budgets", str(budgets), "--baseline", str(tmp_path / "other" / "report.json")]) == 2
    assert "shares no result" in capsys.readouterr().err


@pytest.mark.parametrize("edit, needle", [
    (lambda r: r.update(accuracy=min(1.0, r["accuracy"] + 0.05)), "per-sample results give"),
    (lambda r: r["latency_ms"].update(p50=r["latency_ms"]["p50"] / 2), "latency p50"),
    (lambda r: r.update(peak_rss_mb=1.0), "its processes peaked at"),
])
def test_add_refuses_a_result_edited_by_hand(bench_copy, tmp_path, capsys, edit, needle):
    row = next(r for r in json.loads((bench_copy / "bench" / "local.json").read_text())["results"]
               if r["artifact"] == "export/student.int8.tflite")
    edit(row)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps({"schema": "edgekd.bench/1", "target": "pi4", "results": [{**row, "target": "pi4"}]}))
    assert main(["report", str(bench_copy), "--add", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "disagree with their own samples" in err and needle in err
    assert not (bench_copy / "bench" / "pi4.json").exists()
    untouched = tmp_path / "as_written.json"
    untouched.write_text(json.dumps({"schema": "edgekd.bench/1", "target": "pi4", "results": [
        {**r, "target": "pi4"} for r in json.loads((bench_copy / "bench" / "local.json").read_text())["results"]]}))
    assert main(["report", str(bench_copy), "--add", str(untouched)]) == 0  # as the agent wrote them: merged


def test_a_damaged_manifest_or_edited_config_is_named_never_trusted(bench_copy, tmp_path, capsys):
    budgets = tmp_path / "b.toml"
    budgets.write_text('[[budget]]\nartifact = "*.tflite"\nmin_accuracy = 0.1\n')
    manifest = bench_copy / "manifest.json"
    good = manifest.read_bytes()
    at = good.index(b'"accuracy"') + 14  # inside a recorded number: the JSON still parses
    flipped = good[:at] + bytes([good[at] ^ 1]) + good[at + 1:]
    for damaged, needle in ((flipped, "changed since edgekd wrote it"), (good[:len(good) // 2], "unreadable")):
        manifest.write_bytes(damaged)
        for argv in (["report", str(bench_copy)], ["gate", str(bench_copy / "report.json"), "--budgets", str(budgets)]):
            assert main(argv) == 2, argv
            err = " ".join(capsys.readouterr().err.split())
            assert "manifest.json" in err and needle in err and "new manifest" not in err
    manifest.write_bytes(good)
    config = bench_copy / "config.toml"
    config.write_text(config.read_text().replace("max_int8_drop = 0.01", "max_int8_drop = 0.5"))
    assert main(["report", str(bench_copy)]) == 2
    assert "config.toml changed since edgekd wrote it" in " ".join(capsys.readouterr().err.split())


def test_a_target_that_fails_leaves_no_file_behind(bench_copy, tmp_path, capsys):
    targets = tmp_path / "t.toml"
    targets.write_text('[targets.gone]\nkind = "command"\nprefix = ["/nonexistent/python3"]\n')
    before = sorted(p.name for p in (bench_copy / "bench").iterdir())
    assert main(["bench", str(bench_copy), "--targets", str(targets), "--target", "gone"]) in (1, 3)
    assert "gone" in capsys.readouterr().err
    assert sorted(p.name for p in (bench_copy / "bench").iterdir()) == before
    assert main(["report", str(bench_copy)]) == 0  # nothing left that blocks the next command


def test_pack_prints_a_quoted_device_command(bench_run, tmp_path, capsys):
    out = tmp_path / "my bundle;x.zip"
    assert main(["pack", str(bench_run), "-o", str(out)]) == 0
    assert ("unzip -o 'my bundle;x.zip' agent.pyz && python3 agent.pyz 'my bundle;x.zip' -o results.json"
            in " ".join(capsys.readouterr().out.split()))


@pytest.mark.parametrize("command", ["run", "report"])
def test_a_100000_character_path_exits_2_with_a_short_message(tmp_path, capsys, command):
    path = str(tmp_path / ("a" * 100_000))
    argv = ["run", str(ROOT / "configs" / "digits.toml"), "--out", path] if command == "run" else ["report", path]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "(100,0" in err and "characters)" in err and len(err) < 2000 and "Traceback" not in err


def _added(bench_copy, tmp_path, change):
    row = next(r for r in json.loads((bench_copy / "bench" / "local.json").read_text())["results"]
               if r["artifact"] == "export/student.int8.tflite")
    change(row)
    path = tmp_path / "added.json"
    path.write_text(json.dumps({"schema": "edgekd.bench/1", "target": "pi4", "results": [{**row, "target": "pi4"}]}))
    return main(["report", str(bench_copy), "--add", str(path)])


def test_add_refuses_results_scored_on_another_eval_set_or_with_malformed_samples(bench_copy, tmp_path, capsys):
    def subset(r):  # scored on the first 8 samples only, consistently with itself
        bits = bytes.fromhex(r["correct_bits"])[:1]
        r.update(n_eval=8, correct_bits=bits.hex(), accuracy=bin(bits[0]).count("1") / 8)
    assert _added(bench_copy, tmp_path, subset) == 2
    assert "scored on 8 samples, but this run's data/eval.npz has 359" in " ".join(capsys.readouterr().err.split())
    for change in (lambda r: r.update(samples_ms=["x"]), lambda r: r.update(process_peak_rss_mb=7)):
        assert _added(bench_copy, tmp_path, change) == 2
        err = capsys.readouterr().err
        assert "expected a list" in err and "Traceback" not in err


def test_add_accepts_a_benchmark_model_row_which_keeps_no_samples(bench_copy, tmp_path):
    from edgekd.bench.adb import RUNTIME

    def adb_like(r):
        r.update(runtime=RUNTIME, samples_ms=[], peak_rss_mb=None, process_peak_rss_mb=[None, None])
    assert _added(bench_copy, tmp_path, adb_like) == 0
    pi = [r for r in _report(bench_copy)["results"] if r["target"] == "pi4"]
    assert len(pi) == 1 and pi[0]["peak_rss_mb"] is None
    assert "not measured" in (bench_copy / "report.md").read_text()


def test_a_genuine_summary_of_a_spiky_pool_is_within_its_kept_samples():
    """The agent keeps 5,000 of the pooled samples: p50 and p95 of the whole pool must pass the check
    even with 6 % slow runs (a busy board), and a p50 edited by 10 % must not."""
    import numpy as np

    from edgekd.bench.agent.stats import percentiles, subsample
    from edgekd.pipeline.reporting.report import _within_sampling

    rng = np.random.default_rng(0)
    for _ in range(200):
        pool = rng.lognormal(0, 0.05, 100_000) * np.where(rng.random(100_000) < 0.06, rng.uniform(2, 20, 100_000), 1)
        kept, full = subsample(pool, 5000), percentiles(pool)
        assert _within_sampling(full["p50"], kept, 0.5) and _within_sampling(full["p95"], kept, 0.95)
        assert not _within_sampling(full["p50"] * 0.9, kept, 0.5)


def test_the_file_to_ship_excludes_a_file_scored_on_another_eval_set():
    from edgekd.pipeline.reporting.recommend import recommend

    def row(artifact, n, p50):
        return {"artifact": artifact, "target": "pi", "accuracy": 0.9, "n_eval": n, "threads": 1,
                "latency_ms": {"p50": p50, "p50_ci95": [p50, p50]}}
    report = {"artifacts": [{"file": "export/teacher.tflite", "model": "teacher", "precision": "fp32", "size_bytes": 9},
                            {"file": "export/student.tflite", "model": "student", "precision": "fp32", "size_bytes": 3}],
              "results": [row("export/teacher.tflite", 100, 2.0), row("export/student.tflite", 50, 1.0)],
              "models": {"teacher": {"accuracy": 0.9}}}
    rec = recommend(report, 0.01)["pi"]
    assert rec["ship"] == "export/teacher.tflite"
    assert "scored on 100 samples" in rec["excluded"][0]["why"]
