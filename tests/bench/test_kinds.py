"""A target kind is one module and one row of edgekd.bench.kinds.KINDS: every row's module declares a
complete kind, and a kind that exists only in tests (tests/bench/nice_kind.py, added with one row) is
parsed, checked, listed and measured through like the others."""
import dataclasses
import json

import numpy as np
import pytest

from edgekd.bench.kinds import KINDS, Row, load
from edgekd.errors import ConfigError
from edgekd.pipeline.cli import main
from edgekd.pipeline.config.targets import as_dict, load_targets_file
from tests.bench.nice_kind import NiceTargetConfig


@pytest.fixture
def nice(monkeypatch):
    monkeypatch.setitem(KINDS, "nice", Row("tests.bench.nice_kind", "this machine under nice -n"))


def test_every_row_names_a_module_that_declares_a_frozen_table_for_its_kind():
    for name in KINDS:
        config = load(name).config()
        assert config.kind == name
        assert {"kind", "threads", "processes", "timeout_s"} <= {f.name for f in dataclasses.fields(config)}
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.threads = (2,)
    # the defaults of today's kinds, unchanged by their move into bench/
    assert {name: load(name).config().timeout_s for name in KINDS} == {"local": 3600.0, "ssh": 600.0, "adb": 600.0,
                                                                        "command": 1800.0}


def test_a_new_kind_is_parsed_with_its_own_keys_and_built_by_its_module(tmp_path, nice):
    from edgekd.pipeline.config import BenchConfig
    from edgekd.pipeline.stages.bench import make_target

    (tmp_path / "t.toml").write_text('[targets.calm]\nkind = "nice"\nniceness = 5\nthreads = [1, 2]\n')
    targets = load_targets_file(tmp_path / "t.toml")
    assert targets["calm"] == NiceTargetConfig(niceness=5, threads=(1, 2))
    assert as_dict(targets)["calm"] == {"kind": "nice", "niceness": 5, "threads": (1, 2), "processes": 0,
                                        "timeout_s": 600.0}
    target = make_target("calm", targets["calm"], BenchConfig(processes=3))
    assert target.kind == "nice" and target.prefix[:3] == ["nice", "-n", "5"]
    assert target.options.threads == (1, 2) and target.options.processes == 3 and target.options.timeout_s == 600.0


def test_a_new_kinds_wrong_keys_and_values_are_reported_together_with_exit_2(tmp_path, nice, bench_run, capsys):
    (tmp_path / "t.toml").write_text('[targets.calm]\nkind = "nice"\nniceness = "high"\nhost = "pi"\n\n'
                                     '[targets.loud]\nkind = "nice"\nniceness = 40\nprocesses = -1\n\n'
                                     '[targets.box]\nkind = "docker"\n')
    with pytest.raises(ConfigError) as err:
        load_targets_file(tmp_path / "t.toml")
    assert err.value.exit_code == 2
    assert err.value.problems == [
        "targets.calm.niceness = 'high': expected an integer",
        "unknown key 'targets.calm.host'; valid keys in [targets.calm]: kind, niceness, threads, processes, timeout_s "
        "(that key is for kind 'ssh')",
        "targets.loud: processes must be >= 0 and timeout_s > 0",  # what every kind checks, then its own checks
        "targets.loud.niceness = 40: expected 0..19, as for nice -n",
        "targets.box.kind = 'docker': expected one of 'local', 'ssh', 'adb', 'command', 'nice'"]
    assert main(["bench", str(bench_run), "--targets", str(tmp_path / "t.toml"), "--target", "calm"]) == 2
    assert "targets.loud.niceness = 40" in " ".join(capsys.readouterr().err.split())


def test_the_cli_lists_a_new_kind_from_its_row(nice, capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "nice (this machine under nice -n)" in " ".join(capsys.readouterr().out.split())


def test_edgekd_bench_measures_through_a_new_kind_what_local_measures(bench_copy, tmp_path, nice):
    (tmp_path / "t.toml").write_text('[targets.calm]\nkind = "nice"\nniceness = 5\nprocesses = 2\n')
    assert main(["-q", "bench", str(bench_copy), "--targets", str(tmp_path / "t.toml"), "--target", "calm"]) == 0
    doc = json.loads((bench_copy / "bench" / "calm.json").read_text())
    local = {r["artifact"]: r for r in json.loads((bench_copy / "bench" / "local.json").read_text())["results"]}
    assert doc["kind"] == "nice" and doc["status"] == "ok"
    rows = {r["artifact"]: r for r in doc["results"]}
    assert set(rows) == {"export/student.onnx", "export/student.int8.tflite"}
    n_eval = len(np.load(bench_copy / "data" / "eval.npz")["y"])
    for artifact, row in rows.items():
        assert row["n_eval"] == local[artifact]["n_eval"] == n_eval
        assert row["accuracy"] == local[artifact]["accuracy"] and 0.5 < row["accuracy"] <= 1
        assert row["correct_bits"] == local[artifact]["correct_bits"]
        assert row["latency_ms"]["processes"] == 2 and row["latency_ms"]["p50"] > 0
    report = json.loads((bench_copy / "report.json").read_text())
    assert {r["target"] for r in report["results"]} == {"local", "calm"}
