"""The README's examples of running a shipped file in an app (one per runtime), run as a user would:
on a real run's files and on image files, each printing the label the file's own runtime predicts."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from edgekd.export.formats import run_file
from edgekd.pipeline.config import load_config
from edgekd.pipeline.run import run_pipeline
from tests.helpers import FAST_BENCH, ROOT

EXAMPLES = {"onnxruntime": "student.int8.onnx", "ai-edge-litert": "student.int8.tflite", "executorch": "student.int8.pte"}


def _examples() -> dict[str, str]:
    """The README's example programs under "Running a shipped file in an app", by the package they use."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Running a shipped file in an app", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    return {re.match(r"# \S+ \(([^)]+)\)", block)[1]: block for block in blocks}


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("app") / "digits"
    run_pipeline(load_config(ROOT / "configs" / "digits.toml",
                             [*FAST_BENCH, "export.formats=['onnx_int8', 'tflite_int8', 'pte_int8']"]), run_dir,
                 until="export")
    with np.load(run_dir / "data" / "eval.npz") as f:
        x, mean, std, pixel_max = f["x"][:8], f["mean"], f["std"], float(f["pixel_max"])
    images = []
    for i, sample in enumerate(x):  # the test images as files: the eval samples' own pixels (digits: 0..16)
        raw = np.round((sample[0] * std[0] + mean[0]) * pixel_max).astype(np.uint8)
        assert np.allclose((raw / pixel_max - mean[0]) / std[0], sample[0], atol=1e-5)
        images.append(run_dir / f"digit{i}.png")
        Image.fromarray(raw, mode="L").save(images[-1])
    return run_dir, x, images


def test_the_readme_has_one_example_per_runtime():
    assert set(_examples()) == set(EXAMPLES)
    assert all(len(block.splitlines()) <= 30 for block in _examples().values())  # an app snippet, not a program


@pytest.mark.parametrize("package", list(EXAMPLES))
def test_each_readme_example_prints_the_label_its_runtime_predicts(shipped, tmp_path, package):
    run_dir, x, images = shipped
    program = tmp_path / "app.py"
    program.write_text(_examples()[package])
    model = run_dir / "export" / EXAMPLES[package]
    side = json.loads(model.with_name(model.name + ".json").read_text())
    assert side["preprocess"] == {"channels": 1, "channel_order": "gray", "resize": None,
                                  "layout": "nhwc" if model.suffix == ".tflite" else "nchw"}
    expected = [side["labels"][int(i)] for i in run_file(model, x, side["input"]["layout"]).argmax(1)]
    proc = subprocess.run([sys.executable, str(program), str(model), *map(str, images)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-len(images):] == expected
