"""`edgekd search`: the candidate family, the p50 limit from a budgets file, and (slow) a whole search on
digits through the local target: probes timed before training, successive halving on the validation
split, the answer's own report, and a re-run that reuses every run and timing."""
import json

import pytest

from edgekd.errors import UsageError
from edgekd.pipeline.config import SearchConfig
from edgekd.pipeline.search import candidates, p50_limit, rungs, scaled, space_for
from tests.helpers import ROOT, SEED

CNN_DEFAULTS = {"channels": [32, 64], "hidden": 128, "kernel_size": 3}


def test_width_and_depth_scale_the_configs_student():
    kwargs = {"channels": [8, 16], "hidden": 32}
    assert scaled(space_for("cnn"), kwargs, CNN_DEFAULTS, 0.5, 0) == {"channels": [4, 8], "hidden": 16}
    assert scaled(space_for("cnn"), kwargs, CNN_DEFAULTS, 1.5, -1) == {"channels": [12], "hidden": 48}
    assert scaled(space_for("cnn"), kwargs, CNN_DEFAULTS, 1.0, 1) == {"channels": [8, 16, 16], "hidden": 32}
    assert scaled(space_for("cnn"), {"channels": [8]}, CNN_DEFAULTS, 1.0, -1) is None  # no stage left
    assert scaled(space_for("mlp"), {"hidden": [32]}, {"hidden": [800, 800]}, 0.25, 0) == {"hidden": [8]}


def test_candidates_start_with_the_configs_student_and_a_larger_trials_extends_the_list():
    kwargs = {"channels": [8, 16], "hidden": 32}
    cnn = space_for("cnn")
    few, more = candidates(cnn, kwargs, CNN_DEFAULTS, 5, 0), candidates(cnn, kwargs, CNN_DEFAULTS, 12, 0)
    assert few[0].name == "w1-d+0" and few[0].kwargs == kwargs
    assert [c.name for c in more[:5]] == [c.name for c in few] and len({c.name for c in more}) == 12
    assert [c.name for c in candidates(cnn, kwargs, CNN_DEFAULTS, 12, 1)] != [c.name for c in more]
    with pytest.raises(UsageError, match=r"search knows how to scale cnn, mlp, dsconv; .* \[search\] width_keys"):
        space_for("mypkg.models:Net")


def test_a_user_architecture_is_scaled_by_the_keywords_the_config_names():
    from edgekd.pipeline.search import _arch_defaults

    arch = f"{ROOT / 'tests' / 'user_models.py'}:TinyResNet"
    defaults = _arch_defaults(arch)
    assert defaults == {"in_channels": 1, "width": 8}
    space = space_for(arch, SearchConfig(width_keys=("width",), widths=(0.5, 1.0, 2.0)))
    assert space.depths == (0,)  # no depth key: the depth stays
    found = candidates(space, {}, defaults, 10, 0, arch)
    assert sorted(c.kwargs["width"] for c in found) == [4, 8, 16] and found[0].kwargs == {"width": 8}
    with pytest.raises(UsageError, match=r"cannot be scaled by in_channels = 1.5, depth \(not a keyword of it\)"):
        candidates(space_for(arch, SearchConfig(width_keys=("in_channels",), depth_key="depth")), {"in_channels": 1.5},
                   defaults, 3, 0, arch)


def test_rungs_are_a_ninth_a_third_and_the_whole():
    assert rungs(120) == [13, 40, 120] and rungs(3) == [1, 3] and rungs(1) == [1]


def test_p50_limit_is_the_tightest_budget_for_the_target(tmp_path):
    budgets = tmp_path / "b.toml"
    budgets.write_text('[[budget]]\ntarget = "pi*"\nartifact = "student.int8.tflite"\nmax_p50_ms = 4.0\n'
                       '[[budget]]\ntarget = "*"\nmax_p50_ms = 3.0\n[[budget]]\ntarget = "local"\nmax_p95_ms = 1.0\n')
    assert p50_limit(budgets, "pi4") == 3.0 and p50_limit(budgets, "local") == 3.0
    budgets.write_text('[[budget]]\ntarget = "pi4"\nmax_p50_ms = 4.0\n')
    with pytest.raises(UsageError, match="no budget with max_p50_ms for target 'local'"):
        p50_limit(budgets, "local")


TINY = ["teacher.train.epochs=2", "student.train.epochs=3", f"run.seed={SEED}", "run.device=cpu",
        "export.int8_method=ptq", "bench.processes=2", "bench.min_runs=20", "bench.min_seconds=0.02", "bench.warmup=2"]


def _search(out, limit_ms: float, trials: int = 3):
    from edgekd.pipeline.cli import main

    return main(["-q", "search", str(ROOT / "configs" / "digits.toml"), "--max-p50-ms", str(limit_ms),
                 "--trials", str(trials), "--out", str(out), *[a for s in TINY for a in ("--set", s)]])


@pytest.mark.slow
def test_search_on_digits_answers_within_the_limit_and_reuses_its_work(tmp_path, capsys):
    out = tmp_path / "s"
    assert _search(out, 1000.0) == 0
    summary = json.loads((out / "search.json").read_text())
    names = [c["name"] for c in summary["candidates"]]
    assert names[0] == "w1-d+0" and len(names) == 3 and summary["pruned_before_training"] == []
    assert summary["fidelities"] == [1, 3] and len(summary["finalists"]) == 2
    finals = {n: next(c for c in summary["candidates"] if c["name"] == n)["final"] for n in summary["finalists"]}
    answer = summary["answer"]
    # chosen on validation accuracy alone; the runner-up lost on it
    assert finals[answer]["val_accuracy"] >= max(f["val_accuracy"] for f in finals.values())
    assert summary["runner_up"] in finals and ("lower validation accuracy" in summary["runner_up_lost"] or
                                               "at a slower p50" in summary["runner_up_lost"])
    assert (out / "students" / answer / "report.md").exists() and (out / "plots" / "search.png").exists()
    assert 0.5 < finals[answer]["test_accuracy"] <= 1 and finals[answer]["p50_ms"] > 0
    # a limit under every probe's fastest process: all dropped before training, nothing re-run, exit 1
    fastest = min(c["range_ms"][0] for c in summary["candidates"])
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("students/*/student.pt")}
    capsys.readouterr()
    assert _search(out, fastest / 2) == 1
    assert "every candidate was over it in every process before training" in " ".join(capsys.readouterr().out.split())
    again = json.loads((out / "search.json").read_text())
    assert again["pruned_before_training"] == names and again["answer"] is None
    assert {p: p.stat().st_mtime_ns for p in out.glob("students/*/student.pt")} == stamps


def _record(name, val, p50, low, high):
    return {"name": name, "width": 1.0, "depth": 0, "kwargs": {}, "p50_ms": p50, "range_ms": [low, high],
            "fidelities": {"9": val}, "pruned": False,
            "final": {"p50_ms": p50, "range_ms": [low, high], "val_accuracy": val, "test_accuracy": val}}


@pytest.mark.parametrize("b, lost", [
    (_record("b", 0.97, 0.008, 0.0079, 0.0081), "lower validation accuracy (97.00% against 98.00%)"),
    (_record("b", 0.98, 0.011, 0.0085, 0.0136), "at a slower p50 (11.0 µs against 8.8 µs; their per-process ranges "
                                                "overlap: within noise, either will do)"),
    (_record("b", 0.98, 0.011, 0.0105, 0.0115), "at a slower p50 (11.0 µs against 8.8 µs)"),
])
def test_the_answer_and_why_the_runner_up_lost(tmp_path, b, lost):
    from edgekd.pipeline.search import _summary

    a = _record("a", 0.98, 0.0088, 0.0087, 0.0089)
    summary = _summary({"a": a, "b": b}, ["a", "b"], "local", 0.014, "tflite_int8", [9], tmp_path)
    assert summary["answer"] == "a" and summary["runner_up"] == "b" and summary["runner_up_lost"].endswith(lost)
    assert json.loads((tmp_path / "search.json").read_text())["answer"] == "a"
