"""The report: schema keys, sizes and hashes equal the files', self-contained HTML, --add merging."""
import json
import re
import subprocess
import sys

import pytest

from edgekd.pipeline.cli import main
from edgekd.fileio import sha256_file
from edgekd.pipeline.reporting.plots import pareto

from tests.bench.test_agent import AGENT


def test_report_json_follows_the_schema_and_the_files(bench_run):
    report = json.loads((bench_run / "report.json").read_text())
    assert report["schema"] == "edgekd.report/1"
    assert set(report) >= {"run", "dataset", "models", "artifacts", "results"}
    assert set(report["run"]) >= {"name", "created", "config_hash", "edgekd_version"}
    assert report["dataset"]["n_test"] == 359 and report["dataset"]["input_shape"] == [1, 8, 8]
    assert {a["file"] for a in report["artifacts"]} == {"export/student.onnx", "export/student.int8.tflite"}
    for a in report["artifacts"]:
        assert a["size_bytes"] == (bench_run / a["file"]).stat().st_size
        assert a["sha256"] == sha256_file(bench_run / a["file"])
        assert set(a["parity"]) == {"top1_agreement", "max_abs_diff", "n"}
    rows = {r["artifact"]: r for r in report["results"]}
    assert set(rows) == {"export/student.onnx", "export/student.int8.tflite", "student.pt"}
    for r in rows.values():
        assert r["target"] == "local" and r["n_eval"] == 359 and 0 <= r["accuracy"] <= 1
        assert set(r["latency_ms"]) >= {"p50", "p90", "p95", "p99", "mean", "std", "min", "max", "n", "p50_ci95",
                                        "process_p50"}
        assert len(r["latency_ms"]["process_p50"]) == 2  # bench.processes of the fixture
    assert rows["student.pt"]["runtime"] == "torch"
    assert rows["export/student.int8.tflite"]["runtime"] in ("ai_edge_litert", "tflite_runtime")


def test_markdown_has_one_row_per_result_and_the_audit(bench_run):
    md = (bench_run / "report.md").read_text()
    assert "## Target `local`" in md
    assert md.count("| export/student.int8.tflite | tflite | int8 |") == 1
    assert "| export/student.int8.tflite | full-integer | int8 | 8 | int8 | int8 | per-channel |" in md
    assert "| export/student.onnx | float | float32 | - | float32 | float32 | - |" in md


def test_html_is_self_contained(bench_run):
    page = (bench_run / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "no external resources"
    assert "@import" not in page and "url(" not in page
    assert page.count("data:image/png;base64,") == 3  # pareto, latency distributions, sizes
    assert "<table>" in page and "export/student.int8.tflite" in page


def test_pareto_front():
    # (latency, accuracy): (2, .9) is dominated by (1, .95); ties keep both
    assert pareto([(1, 0.95), (2, 0.9), (3, 0.99), (3, 0.99)]) == [0, 2, 3]


def test_add_merges_results_measured_elsewhere(bench_copy, tmp_path):
    result = tmp_path / "pi.json"
    proc = subprocess.run([*AGENT, str(bench_copy / "export" / "student.int8.tflite"),
                           "--eval", str(bench_copy / "data" / "eval.npz"), "--target", "pi4", "--processes", "2",
                           "--min-runs", "20", "--min-seconds", "0.02", "-o", str(result)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert main(["report", str(bench_copy), "--add", str(result)]) == 0
    report = json.loads((bench_copy / "report.json").read_text())
    pi = [r for r in report["results"] if r["target"] == "pi4"]
    assert [r["artifact"] for r in pi] == ["export/student.int8.tflite"]
    assert "## Target `pi4`" in (bench_copy / "report.md").read_text()
    assert main(["report", str(bench_copy), "--add", str(result)]) == 0  # re-adding replaces, never duplicates
    assert len([r for r in json.loads((bench_copy / "report.json").read_text())["results"] if r["target"] == "pi4"]) == 1


@pytest.mark.parametrize("content, needle", [("{not json", "not a readable results file"),
                                             ('{"schema": "other"}', "expected 'edgekd.bench/1'")])
def test_add_rejects_bad_files_with_exit_2(bench_run, tmp_path, capsys, content, needle):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert main(["report", str(bench_run), "--add", str(bad)]) == 2
    assert needle in " ".join(capsys.readouterr().err.split())


def test_bench_and_report_need_a_run_directory(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not an edgekd run directory" in capsys.readouterr().err
    assert main(["bench", str(tmp_path), "--target", "pi4"]) == 2


def test_add_refuses_a_result_measured_on_another_file(bench_run, tmp_path, capsys):
    """A result names the sha256 of the file it measured; one that is not this run's file is refused."""
    before = {p.name: p.read_bytes() for p in (bench_run / "bench").glob("*.json")}
    onnx_sha = sha256_file(bench_run / "export" / "student.onnx")
    tflite_sha = sha256_file(bench_run / "export" / "student.int8.tflite")
    row = json.loads((bench_run / "bench" / "local.json").read_text())["results"][0]
    cases = [({**row, "artifact": "export/student.int8.tflite", "sha256": onnx_sha}, [onnx_sha[:16], tflite_sha[:16]]),
             ({**row, "artifact": "export/teacher.tflite"}, ["not a file of this run"]),
             ({k: v for k, v in row.items() if k != "sha256"}, ["sha256: expected the sha256 of the measured file"])]
    for i, (bad, needles) in enumerate(cases):
        path = tmp_path / f"other{i}.json"
        path.write_text(json.dumps({"schema": "edgekd.bench/1", "target": "pi9", "results": [{**bad, "target": "pi9"}]}))
        assert main(["report", str(bench_run), "--add", str(path)]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert all(n in err for n in needles), err
    assert {p.name: p.read_bytes() for p in (bench_run / "bench").glob("*.json")} == before, "nothing was merged"


def test_report_gate_and_pack_never_import_torch(bench_run, tmp_path):
    """The commands a CI job or a device-side script calls start fast: no torch in their process."""
    budgets = tmp_path / "b.toml"
    budgets.write_text('[[budget]]\nartifact = "*.tflite"\nmin_accuracy = 0.1\n')
    code = (f"import sys\nfrom edgekd.pipeline.cli import main\n"
            f"assert main(['-q', 'report', {str(bench_run)!r}]) == 0\n"
            f"assert main(['gate', {str(bench_run / 'report.json')!r}, '--budgets', {str(budgets)!r}]) == 0\n"
            f"assert main(['pack', {str(bench_run)!r}, '-o', {str(tmp_path / 'b.zip')!r}]) == 0\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'litert_torch', 'jax')]\n"
            "assert not heavy, heavy[:5]\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_after_edgekd_bench_alone_a_run_reruns_nothing(bench_copy, capsys):
    from edgekd.pipeline.config import load_config
    from edgekd.pipeline.run import run_pipeline
    from tests.helpers import FAST_BENCH, ROOT

    before = (bench_copy / "report.json").stat().st_mtime_ns
    assert main(["-q", "bench", str(bench_copy)]) == 0
    assert (bench_copy / "report.json").stat().st_mtime_ns > before, "edgekd bench rewrites the report"
    again = run_pipeline(load_config(ROOT / "configs" / "digits.toml", FAST_BENCH), bench_copy)
    assert again.ran == [], again.ran


def test_a_new_int8_limit_reconverts_no_file(bench_copy):
    from edgekd.pipeline.config import load_config
    from edgekd.pipeline.run import run_pipeline
    from tests.helpers import FAST_BENCH, ROOT

    hashes = {p.name: sha256_file(p) for p in (bench_copy / "export").iterdir()}
    cfg = load_config(ROOT / "configs" / "digits.toml", [*FAST_BENCH, "export.max_int8_drop=0.02"])
    summary = run_pipeline(cfg, bench_copy, until="export")
    assert summary.ran == ["export"]
    manifest = json.loads((bench_copy / "manifest.json").read_text())
    assert manifest["stages"]["export"]["metrics"]["reused_files"] == 2  # both files kept, none converted
    after = {p.name: sha256_file(p) for p in (bench_copy / "export").iterdir()}
    assert {k: v for k, v in after.items() if not k.endswith(".json")} == \
        {k: v for k, v in hashes.items() if not k.endswith(".json")}
