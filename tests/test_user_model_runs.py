"""User models in a run: their source is part of every stage that builds them (an edited class re-runs
those stages), and a model whose outputs are NaN fails with a message instead of training to "done"."""
import json
import logging
import uuid
from pathlib import Path


from edgekd.fileio import sha256_file
from edgekd.pipeline.cli import main
from edgekd.pipeline.config import load_config
from edgekd.pipeline.run import run_pipeline
from edgekd.pipeline.training.checkpoint import load_checkpoint
from tests.helpers import ROOT, SEED

DIGITS = ROOT / "configs" / "digits.toml"
QUICK = ["teacher.train.epochs=1", "student.train.epochs=2", "run.device=cpu", f"run.seed={SEED}"]

NET = '''
import torch
from torch import nn

SCALE = 1.0


class Net(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 1):
        super().__init__()
        self.fc = nn.LazyLinear(num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1)) * SCALE
'''


def _ran(cfg, run_dir: Path) -> list[str]:
    return run_pipeline(cfg, run_dir, until="student").ran


def test_editing_a_user_model_file_reruns_the_stages_that_build_it(tmp_path, caplog):
    source = tmp_path / "my_net.py"
    source.write_text(NET)
    cfg = load_config(DIGITS, [*QUICK, f"student.arch={source}:Net", "student.kwargs={}"])
    run_dir = tmp_path / "r"
    assert _ran(cfg, run_dir) == ["teacher", "baseline", "student"]
    assert _ran(cfg, run_dir) == []  # nothing changed: everything is fresh
    before = sha256_file(run_dir / "student.pt")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["student"]["input_hashes"][f"file:{source}"] == sha256_file(source)
    source.write_text(NET.replace("SCALE = 1.0", "SCALE = 0.5"))  # a constant used in forward(), no weight changes
    caplog.set_level(logging.INFO, logger="edgekd")
    load_checkpoint(run_dir / "student.pt")  # rebuilt with the edited code: said, not silent
    assert f"the source of its model '{source}:Net' has changed since it was saved ({source})" in caplog.text
    assert _ran(cfg, run_dir) == ["baseline", "student"]  # the teacher does not use the class
    assert f"stage baseline: running (input changed: file:{source})" in caplog.text
    assert sha256_file(run_dir / "student.pt") != before  # trained with the edited code
    assert _ran(cfg, run_dir) == []


def test_editing_a_local_module_a_user_package_imports_reruns_the_stages(tmp_path, monkeypatch):
    """`package.module:Class` in a local folder: the module and the local modules it imports are hashed."""
    package = f"nets_{uuid.uuid4().hex[:8]}"  # a fresh name: this process imports it once
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "blocks.py").write_text("from torch import nn\n\n\ndef head(n):\n    return nn.LazyLinear(n)\n")
    (tmp_path / package / "net.py").write_text(
        f"from torch import nn\nfrom {package}.blocks import head\n\n\nclass Net(nn.Module):\n"
        "    def __init__(self, num_classes):\n        super().__init__()\n        self.fc = head(num_classes)\n\n"
        "    def forward(self, x):\n        return self.fc(x.flatten(1))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config(DIGITS, [*QUICK, f"teacher.arch={package}.net:Net", "teacher.kwargs={}"])
    run_dir = tmp_path / "r"
    assert _ran(cfg, run_dir) == ["teacher", "baseline", "student"]
    inputs = json.loads((run_dir / "manifest.json").read_text())["stages"]["teacher"]["input_hashes"]
    assert {k for k in inputs if k.startswith("file:")} == {f"file:{tmp_path / package / 'blocks.py'}",
                                                           f"file:{tmp_path / package / 'net.py'}"}
    assert _ran(cfg, run_dir) == []
    blocks = tmp_path / package / "blocks.py"
    blocks.write_text(blocks.read_text() + "\n# a comment is enough: the source is what is hashed\n")
    assert _ran(cfg, run_dir) == ["teacher", "student"]  # the baseline does not use the teacher's class


def test_built_in_architectures_add_no_file_inputs(tmp_path):
    run_pipeline(load_config(DIGITS, QUICK), tmp_path / "r", until="baseline")
    stages = json.loads((tmp_path / "r" / "manifest.json").read_text())["stages"]
    assert all(set(s["input_hashes"]) == {"data"} for s in stages.values())


NAN_ALWAYS = NET.replace("* SCALE", "* float('nan')")
NAN_WHEN_TRAINING = NET.replace("* SCALE", "* (float('inf') if self.training else 1.0)")


def test_a_model_whose_outputs_are_nan_exits_2_before_anything_is_written(tmp_path, capsys):
    source = tmp_path / "nan_net.py"
    source.write_text(NAN_ALWAYS)
    code = main(["run", str(DIGITS), "--out", str(tmp_path / "r"), "--set", f"student.arch={source}:Net",
                 "--set", "student.kwargs={}", *[a for s in QUICK for a in ("--set", s)]])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and f"student.arch = '{source}:Net': the model's outputs are NaN or infinite" in err, err
    assert "Fix its forward()" in err and "Traceback" not in err
    assert not list((tmp_path / "r").glob("*")), "nothing is written"


def test_a_model_that_turns_nan_in_training_fails_the_stage_and_writes_no_checkpoint(tmp_path, capsys):
    """Finite outputs at first (so the preflight passes), infinite in training mode: exit 1, a failed check."""
    source = tmp_path / "inf_net.py"
    source.write_text(NAN_WHEN_TRAINING)
    code = main(["run", str(DIGITS), "--out", str(tmp_path / "r"), "--until", "baseline", "--set",
                 f"student.arch={source}:Net", "--set", "student.kwargs={}", *[a for s in QUICK for a in ("--set", s)]])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1, err
    assert f"baseline (student.arch = '{source}:Net'): the training loss became NaN or infinite in epoch 1" in err
    assert "nothing was written for this model" in err and "lower train.lr" in err and "Traceback" not in err
    run_dir = tmp_path / "r"
    assert not (run_dir / "baseline.pt").exists() and (run_dir / "teacher.pt").exists()
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert stages["baseline"]["status"] == "failed" and stages["teacher"]["status"] == "done"
    assert "baseline.pt" not in json.loads((run_dir / "manifest.json").read_text())["artifacts"]
