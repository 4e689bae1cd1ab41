"""Config loading: every shipped config loads, overrides type-check, every problem is reported at once."""
from pathlib import Path

import pytest

from edgekd.pipeline.cli import main
from edgekd.pipeline.config import PipelineConfig, load_config
from edgekd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.toml"))


def test_configs_exist():
    assert {"digits.toml", "mnist5k.toml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads_and_names_its_command(path):
    cfg = load_config(path)
    assert cfg.run.name == path.stem
    first = path.read_text().splitlines()[0]
    assert first == f"# edgekd run configs/{path.relative_to(ROOT / 'configs')}"


def test_overrides_are_typed():
    cfg = load_config(ROOT / "configs/digits.toml",
                      ["student.arch=cnn", "distill.temperature=8", "student.kwargs={channels=[4], hidden=0}",
                       "teacher.train.epochs=3"])
    assert cfg.student.arch == "cnn"
    assert cfg.distill.temperature == 8.0 and isinstance(cfg.distill.temperature, float)
    assert cfg.student.kwargs == {"channels": [4], "hidden": 0}
    assert cfg.teacher.train.epochs == 3
    assert cfg.teacher.train.lr == load_config(ROOT / "configs/digits.toml").teacher.train.lr


def test_resolved_toml_round_trips(tmp_path):
    cfg = load_config(ROOT / "configs/mnist5k.toml", ["distill.alpha=0.5"])
    (tmp_path / "c.toml").write_text(cfg.to_toml())
    assert load_config(tmp_path / "c.toml") == cfg


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "configs/digits.toml",
                    ["student.archh=mlp", "teacher.train.lr=fast", "distill.temperature=0",
                     "distill.alpha=1.5", "student.arch=resnet9000", "data.dataset=cifar"])
    problems = err.value.problems
    assert len(problems) == 6, problems
    text = str(err.value)
    for needle in ("student.archh", "valid keys in [student]: arch, kwargs, train",
                   "teacher.train.lr = 'fast': expected a number", "distill.temperature = 0.0: must be > 0",
                   "distill.alpha = 1.5: must be in [0, 1]", "'resnet9000'", "valid: mlp, cnn, dsconv",
                   "data.dataset = 'cifar'", "valid: digits, mnist5k, idx, npz, folder"):
        assert needle in text, needle


def test_unknown_model_option_lists_accepted_ones():
    with pytest.raises(ConfigError, match="does not take width; it takes: dropout, hidden"):
        load_config(None, ["student.arch=mlp", "student.kwargs={width=3}"])


def test_defaults_live_in_the_dataclasses():
    assert load_config(None) == PipelineConfig()


@pytest.mark.parametrize("override, needle", [
    ("distill.temperature=-1", "distill.temperature = -1.0: must be > 0"),
    ("distill.alpha=-0.1", "distill.alpha = -0.1: must be in [0, 1]"),
    ("student.arch=nope", "unknown architecture 'nope'"),
    ("teacher.train.epochs=2.5", "teacher.train.epochs = 2.5: expected an integer"),
    ("run.device=tpu", "run.device = 'tpu': expected one of 'auto' | 'cpu' | 'cuda'"),
    ("bogus=1", "unknown key 'bogus'"),
    ("student.arch.x=1", "student.arch is not a table"),
])
def test_cli_bad_config_exits_2_with_message(override, needle, capsys, tmp_path):
    code = main(["run", str(ROOT / "configs/digits.toml"), "--out", str(tmp_path / "r"), "--set", override])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in " ".join(err.split()), err
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists(), "a rejected config must not create a run directory"


def test_cli_malformed_toml_names_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\nseed = = 3\n")
    assert main(["run", str(bad)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "not valid TOML" in err and "line 2" in err


@pytest.mark.parametrize("override, needle", [
    ("run.seed=" + "9" * 100_000, "--set run.seed=<a number of 100,000 digits>: out of range; TOML integers are 64-bit"),
    ("run.seed=" + "9" * 30, "run.seed = 999999999999999999999999999999: out of range; TOML integers are 64-bit"),
    ("data.path=/" + "a" * 100_000, "(100,001 characters): too long; at most 4,096 characters"),
    ("teacher.checkpoint=/" + "b" * 100_000, "teacher.checkpoint = '/bbbb"),
    ("k" * 100_000 + "=1", "unknown key 'kkkk"),
    ("run.seed=-5", "run.seed = -5: must be >= 0"),
])
def test_cli_huge_values_exit_2_with_a_short_message(override, needle, capsys, tmp_path):
    """A 100,000-digit number or a 100,000-character path is named in a few words: no traceback, no echo."""
    code = main(["run", str(ROOT / "configs/digits.toml"), "--out", str(tmp_path / "r"), "--set", override])
    err = capsys.readouterr().err
    assert code == 2 and needle in " ".join(err.split()), err[:2000]
    assert "Traceback" not in err and len(err) < 2000, err[:2000]
    assert not (tmp_path / "r").exists()


def test_cli_a_toml_file_with_a_100000_digit_number_exits_2(tmp_path, capsys):
    bad = tmp_path / "big.toml"
    bad.write_text("[run]\nseed = " + "7" * 100_000 + "\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "big.toml" in err and "not valid TOML" in err and "64-bit" in err and "Traceback" not in err
    assert len(err) < 2000
