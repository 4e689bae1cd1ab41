"""Integrity of a run: one writer at a time, every file checked against its recorded sha256, bundles
verified on the device, malformed input always exit 2."""
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from edgekd.fileio import sha256_file
from edgekd.pipeline.cli import main
from edgekd.pipeline.lock import run_lock
from tests.helpers import SEED

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "configs" / "digits.toml")
AGENT = [sys.executable, "-m", "edgekd.bench.agent"]  # as a checkout runs it


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgekd.pipeline.cli", *args]


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
    run_dir = tmp_path / "r"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
                               "from edgekd.pipeline.lock import run_lock\n"
                               f"with run_lock(Path({str(run_dir / '.edgekd.lock')!r})):\n"
                               "    print('held', flush=True); time.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = subprocess.run(_cli("run", DIGITS, "--out", str(run_dir)), capture_output=True, text=True)
        err = " ".join(proc.stderr.split())
        assert proc.returncode == 3 and f"pid {holder.pid}" in err and "another directory with --out" in err, err
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, caplog):
    lock = tmp_path / ".edgekd.lock"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "command": "edgekd run old", "since": "earlier"}))
    with run_lock(lock):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert f"taking over the lock of pid {dead.pid}" in caplog.text


def _concurrent_pairs(tmp_path: Path, pairs: int) -> None:
    settings = ["--set", "teacher.train.epochs=4", "--set", f"run.seed={SEED}", "--until", "teacher"]
    for i in range(pairs):
        run_dir = tmp_path / f"pair{i}"
        procs = [subprocess.Popen(_cli("-q", "run", DIGITS, "--out", str(run_dir), *settings,
                                       "--set", f"distill.temperature={t}"), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for t in (2, 4)]
        codes = sorted(p.wait() for p in procs)
        errors = [p.stderr.read() for p in procs]
        assert codes == [0, 3], (i, codes, errors)
        assert any("is being written by" in " ".join(e.split()) for e in errors), errors
        manifest = json.loads((run_dir / "manifest.json").read_text())
        for rel, entry in manifest["artifacts"].items():
            assert sha256_file(run_dir / rel) == entry["sha256"], (i, rel)


def test_concurrent_runs_into_one_directory(tmp_path):
    _concurrent_pairs(tmp_path, 3)


@pytest.mark.slow
def test_twenty_concurrent_pairs(tmp_path):
    _concurrent_pairs(tmp_path, 20)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_every_command_refuses_a_run_with_one_flipped_byte(bench_run, tmp_path, capsys):
    """Fault injection: one byte flipped in each kind of file; bench, report, gate and pack all exit 2."""
    budgets = tmp_path / "b.toml"
    budgets.write_text('[[budget]]\nmin_accuracy = 0.0\n')
    files = sorted(rel for rel in json.loads((bench_run / "manifest.json").read_text())["artifacts"])
    kinds = {"teacher.pt", "baseline.pt", "student.pt", "data/eval.npz", "data/calibration.npz", "export/student.onnx",
             "export/student.onnx.json", "export/student.int8.tflite", "export/student.int8.tflite.json",
             "bench/local.json", "report.json", "report.md"}
    assert kinds <= set(files)
    outcomes = {}
    for rel in files:
        copy = tmp_path / rel.replace("/", "_")
        shutil.copytree(bench_run, copy)
        _flip(copy / rel)
        for command in (["-q", "bench", str(copy)], ["report", str(copy)], ["pack", str(copy), "-o", str(tmp_path / "b.zip")],
                        ["gate", str(copy / "report.json"), "--budgets", str(budgets)]):
            code = main(command)
            err = " ".join(capsys.readouterr().err.split())
            outcomes[(rel, next(c for c in command if c in ("bench", "report", "pack", "gate")))] = code
            assert code == 2, (rel, command, err)
            assert "Traceback" not in err and any(w in err for w in ("changed", "not a valid", "not a readable")), err
    assert all(code != 0 for code in outcomes.values()) and len(outcomes) == 4 * len(files)


def test_run_recreates_a_tampered_eval_set(bench_run, tmp_path):
    from edgekd.pipeline.config import load_config
    from edgekd.pipeline.run import run_pipeline
    from tests.helpers import FAST_BENCH

    copy = tmp_path / "r"
    shutil.copytree(bench_run, copy)
    original = sha256_file(copy / "data" / "eval.npz")
    _flip(copy / "data" / "eval.npz")
    summary = run_pipeline(load_config(ROOT / "configs" / "digits.toml", FAST_BENCH), copy)
    assert sha256_file(copy / "data" / "eval.npz") == original and summary.ran == []


def _bundle(bench_run: Path, tmp_path: Path) -> Path:
    bundle = tmp_path / "b.zip"
    assert main(["pack", str(bench_run), "-o", str(bundle)]) == 0
    return bundle


def _rewrite(bundle: Path, out: Path, change) -> Path:
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = change(info, src.read(info))
            if data is not None:
                dst.writestr(info, data)
    return out


@pytest.mark.parametrize("case, needle", [
    ("altered", "export/student.onnx: altered (sha256 differs from bundle.json)"),
    ("extra", "extra.onnx: not listed in bundle.json (an extra file)"),
    ("missing", "export/student.onnx: listed in bundle.json but missing"),
    ("link", "link.onnx: a symbolic link"),
    ("escape", "../evil.onnx: a path outside the bundle's directory"),
])
def test_the_agent_refuses_a_bundle_that_is_not_what_pack_wrote(bench_run, tmp_path, case, needle):
    bundle = _bundle(bench_run, tmp_path)

    def change(info, data):
        if case == "altered" and info.filename == "export/student.onnx":
            return data[:-1] + bytes([data[-1] ^ 1])
        if case == "missing" and info.filename == "export/student.onnx":
            return None
        return data
    bad = _rewrite(bundle, tmp_path / "bad.zip", change)
    if case in ("extra", "link", "escape"):
        with zipfile.ZipFile(bad, "a") as z:
            name = {"extra": "extra.onnx", "link": "link.onnx", "escape": "../evil.onnx"}[case]
            info = zipfile.ZipInfo(name)
            if case == "link":
                info.external_attr = (0o120777 << 16)
            z.writestr(info, "export/student.onnx" if case == "link" else "x")
    proc = subprocess.run([*AGENT, str(bad), "--processes", "1"], capture_output=True, text=True)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("error:") == 1


def test_a_killed_agent_leaves_no_temp_directory_behind(bench_run, tmp_path):
    """SIGKILL the agent mid-bundle: its workers die with it, and the next agent removes what it left."""
    import tempfile

    bundle = _bundle(bench_run, tmp_path)
    proc = subprocess.Popen([*AGENT, str(bundle), "--processes", "5", "--min-seconds", "1"],
                            stderr=subprocess.PIPE, text=True)
    leftovers = []
    deadline = time.time() + 60
    while time.time() < deadline and not leftovers:
        leftovers = list(Path(tempfile.gettempdir()).glob(f"edgekd-{proc.pid}-*"))
        time.sleep(0.05)
    assert leftovers, "the agent works in a temporary directory named after it"
    time.sleep(1.0)  # a worker is timing
    proc.kill()
    proc.wait()
    time.sleep(0.5)  # SIGTERM reaches the orphaned worker
    workers = subprocess.run(["pgrep", "-f", "edgekd.bench.agent --worker"], capture_output=True, text=True).stdout.split()
    assert not workers, f"orphaned workers {workers}"
    subprocess.run([*AGENT, str(bench_run / "export" / "student.onnx"), "--processes", "1",
                    "--min-runs", "5", "--min-seconds", "0", "-o", str(tmp_path / "r.json")], check=True, capture_output=True)
    assert not [p for p in leftovers if p.exists()]


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

KEYS = ["schema", "results", "artifacts", "artifact", "target", "latency_ms", "p50", "p95", "p99", "p50_ci95",
        "process_p50", "accuracy", "n_eval", "peak_rss_mb", "sha256", "file", "size_bytes", "skipped", "reason"]
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10, 10 ** 6), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=8), st.sampled_from(["edgekd.report/1", "edgekd.bench/1", "edgekd.result/1",
                                                          "local", "export/student.onnx", "0" * 64]))
_json = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.sampled_from(KEYS), inner, max_size=6)),
                     max_leaves=25)


def _valid_report() -> dict:
    return {"schema": "edgekd.report/1", "artifacts": [{"file": "export/m.tflite", "size_bytes": 10}],
            "results": [{"artifact": "export/m.tflite", "target": "local", "accuracy": 0.9, "n_eval": 10,
                         "peak_rss_mb": 5.0, "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0, "p50_ci95": [0.9, 1.1],
                                                            "process_p50": [1.0, 1.1, 0.9, 1.0, 1.0]}}]}


def _mutated(draw_value, path_keys, report):
    node = report
    for key in path_keys[:-1]:
        node = node[key]
    node[path_keys[-1]] = draw_value
    return report


_PATHS = [("schema",), ("results",), ("results", 0), ("results", 0, "latency_ms"), ("results", 0, "latency_ms", "p50"),
          ("results", 0, "latency_ms", "p50_ci95"), ("results", 0, "latency_ms", "process_p50"), ("results", 0, "accuracy"),
          ("results", 0, "target"), ("results", 0, "n_eval"), ("artifacts",), ("artifacts", 0, "size_bytes")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=_json, mutation=st.tuples(st.sampled_from(_PATHS), _json))
def test_gate_never_crashes_on_any_json(tmp_path, blob, mutation):
    budgets = tmp_path / "b.toml"
    budgets.write_text('[[budget]]\nmax_p95_ms = 5\n\n[regression]\nmax_latency_increase = 0.1\n')
    for i, content in enumerate((blob, _mutated(mutation[1], list(mutation[0]), _valid_report()))):
        path = tmp_path / f"r{i}.json"
        path.write_text(json.dumps(content))
        code = main(["-q", "gate", str(path), "--budgets", str(budgets), "--baseline", str(path)])
        assert code in ((2,) if i == 0 else (0, 1, 2, 4))  # a random document is never a report


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=_json)
def test_report_add_never_crashes_and_never_writes_on_any_json(bench_run, tmp_path, blob):
    before = {p.name: p.read_bytes() for p in (bench_run / "bench").glob("*.json")}
    path = tmp_path / "added.json"
    path.write_text(json.dumps(blob))
    assert main(["-q", "report", str(bench_run), "--add", str(path)]) == 2
    assert {p.name: p.read_bytes() for p in (bench_run / "bench").glob("*.json")} == before


def test_report_add_refuses_garbage_bytes_and_results_without_accuracy(bench_run, tmp_path, capsys):
    garbage = tmp_path / "g.json"
    garbage.write_bytes(bytes(range(256)))
    assert main(["report", str(bench_run), "--add", str(garbage)]) == 2
    row = json.loads((bench_run / "bench" / "local.json").read_text())["results"][0]
    no_eval = tmp_path / "no_eval.json"
    no_eval.write_text(json.dumps({"schema": "edgekd.bench/1", "results": [{**row, "accuracy": None}]}))
    assert main(["report", str(bench_run), "--add", str(no_eval)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "not a readable results file" in err and "run the agent with --eval data/eval.npz" in err


@pytest.mark.parametrize("text, needle", [
    ("[[budget]]\nmax_p95_ms = nan\n", "max_p95_ms = nan: expected a finite number"),
    ("[[budget]]\nmax_p95_ms = inf\n", "max_p95_ms = inf: expected a finite number"),
    ("[[budget]]\nmin_accuracy = 5.0\n", "min_accuracy = 5.0: a fraction in [0, 1]"),
    ("[regression]\nmax_latency_increase = nan\n", "max_latency_increase = nan: expected a finite number"),
])
def test_budgets_refuse_non_finite_and_impossible_values(tmp_path, capsys, text, needle):
    (tmp_path / "b.toml").write_text(text)
    (tmp_path / "r.json").write_text(json.dumps(_valid_report()))
    assert main(["gate", str(tmp_path / "r.json"), "--budgets", str(tmp_path / "b.toml")]) == 2
    assert needle in " ".join(capsys.readouterr().err.split())
