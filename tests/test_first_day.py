"""A user's first day: every misuse exits 2 with one message naming the problem and the fix, before
any work is done, and no traceback without --debug. Each test runs the real command."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekd import __version__
from edgekd.errors import ConfigError
from edgekd.pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "configs" / "digits.toml")


def _run(capsys, *args) -> tuple[int, str]:
    code = main(list(args))
    err = " ".join(capsys.readouterr().err.split())
    assert "Traceback" not in err
    return code, err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"edgekd {__version__}"


def test_help_lists_stages_formats_and_targets(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("teacher, baseline, student, quantize, export, bench, report", "tflite_int8", "targets: local, ssh, adb, command"):
        assert needle in text


def test_out_naming_a_file(tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    code, err = _run(capsys, "run", DIGITS, "--out", str(tmp_path / "taken"))
    assert code == 2 and "is a file; pass a directory" in err


def test_out_that_cannot_be_written(tmp_path, capsys):
    if os.geteuid() == 0:  # root writes through permission bits; sysfs refuses everyone
        target = Path("/sys/edgekd-test-run")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        target = locked / "run"
    code, err = _run(capsys, "run", DIGITS, "--out", str(target))
    assert code == 2 and "cannot write there" in err and "choose another directory" in err


@pytest.mark.parametrize("override, needles", [
    ("student.kwargs.hidden=32", ["student.arch / student.kwargs", "'int' object is not iterable",
                                  "'mlp' takes: hidden=(800, 800), dropout=0.0"]),
    ('teacher.kwargs={hidden="wide"}', ["teacher.arch / teacher.kwargs", "'cnn' takes:"]),
    ("student.arch=tests.user_models:WrongOutput", ["outputs shape [3] per sample", "10 classes"]),
    ("export.formats=onnx", ["export.formats = 'onnx': expected a list of strings", "--set \"KEY=['onnx']\""]),
])
def test_model_and_option_errors_before_any_work(tmp_path, capsys, override, needles):
    code, err = _run(capsys, "run", DIGITS, "--out", str(tmp_path / "r"), "--set", override,
                     "--set", "student.kwargs={}" if "WrongOutput" in override else "run.seed=0")
    assert code == 2, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not (tmp_path / "r" / "teacher.pt").exists() and not (tmp_path / "r" / "manifest.json").exists()


def _images(root: Path, per_class: dict[str, int]) -> None:
    for name, n in per_class.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((6, 6), 20 * i, np.uint8)).save(root / name / f"{i}.png")


@pytest.mark.parametrize("per_class, needle", [({"a": 1, "b": 1}, "each class needs at least 3"),
                                               ({"only": 9}, "a classifier needs at least two")])
def test_folder_too_small(tmp_path, capsys, per_class, needle):
    _images(tmp_path / "imgs", per_class)
    code, err = _run(capsys, "run", DIGITS, "--out", str(tmp_path / "r"), "--set", "data.dataset=folder",
                     "--set", f"data.path={tmp_path / 'imgs'}")
    assert code == 2 and needle in err


def test_pack_output_naming_a_directory(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text("{}")
    code, err = _run(capsys, "pack", str(tmp_path / "run"), "-o", str(tmp_path))
    assert code == 2 and "is a directory; name the bundle file" in err


def test_flags_before_the_command_name_count(tmp_path):
    with pytest.raises(ConfigError):  # --debug shows the exception itself instead of one line
        main(["--debug", "run", DIGITS, "--out", str(tmp_path / "r"), "--set", "distill.alpha=7"])
    from edgekd.pipeline.cli import build_parser
    args = build_parser().parse_args(["-q", "run", DIGITS])
    assert args.quiet_before and not args.quiet


def test_a_project_with_its_own_models_and_pipeline_packages(tmp_path):
    """Most ML repositories have `models/` and `pipeline/`: edgekd must not import them instead of its own."""
    for name in ("models", "pipeline", "export", "bench"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise ImportError('the user project was imported')\n")
    proc = subprocess.run([sys.executable, "-m", "edgekd.pipeline.cli", "run", DIGITS, "--set", "data.dataset=nope"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and "data.dataset = 'nope'" in " ".join(proc.stderr.split()), proc.stderr[-2000:]


def test_gate_json_into_a_pipe_that_closes_early(tmp_path):
    report = {"schema": "edgekd.report/1", "artifacts": [], "results": [
        {"artifact": f"export/m{i}.tflite", "target": "local", "accuracy": 0.9, "n_eval": 10, "peak_rss_mb": 5.0,
         "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0, "p50_ci95": [0.9, 1.1]}} for i in range(300)]}
    (tmp_path / "report.json").write_text(json.dumps(report))
    (tmp_path / "b.toml").write_text('[[budget]]\nmax_p95_ms = 5\n')
    proc = subprocess.run(f"{sys.executable} -m edgekd.pipeline.cli gate {tmp_path / 'report.json'} --budgets "
                          f"{tmp_path / 'b.toml'} --json | head -c 100", shell=True, capture_output=True, text=True)
    assert len(proc.stdout) == 100 and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
