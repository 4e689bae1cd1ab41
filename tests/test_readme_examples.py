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
    assert all(len(block.splitlines()) <= 32 for block in _examples().values())  # an app snippet, not a program


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


def _preprocess_lines() -> str:
    """The examples' lines from opening the image to its H, W, C pixels (the same in all three)."""
    blocks = {package: block.splitlines() for package, block in _examples().items()}
    cuts = {package: "\n".join(lines[next(i for i, l in enumerate(lines) if "Image.open(image)" in l):
                                     next(i for i, l in enumerate(lines) if l.strip().startswith("raw =")) + 1])
            for package, lines in blocks.items()}
    assert len(set(cuts.values())) == 1, "the examples preprocess differently"
    return "\n".join(line[4:] for line in next(iter(cuts.values())).splitlines())  # out of the for loop


@pytest.mark.parametrize("resize", ["stretch", "crop"])
def test_the_examples_resize_an_image_as_training_decoded_it(tmp_path, resize):
    """A 37 x 20 RGB image through the README's preprocessing with a sidecar of data.resize = `resize`
    gives the pixels the folder loader trained on (not merely the same shape)."""
    from edgekd.pipeline.config import DataConfig
    from edgekd.pipeline.data.loaders import load_folder
    from edgekd.pipeline.stages.export import preprocess

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (20, 37, 3), np.uint8)).save(tmp_path / "imgs" / c / "0.png")
    cfg = DataConfig(dataset="folder", path=str(tmp_path / "imgs"), image_size=(12, 16), resize=resize, cache=False)
    trained = load_folder(cfg).x[0]  # (C, H, W) uint8
    pre = preprocess(cfg, {"shape": [1, 3, 12, 16]}, "nchw")
    assert pre["resize"]["crop"] == ("center" if resize == "crop" else None)
    scope = {"np": np, "Image": Image, "image": str(tmp_path / "imgs" / "a" / "0.png"), "pre": pre}
    exec(_preprocess_lines(), scope)
    assert scope["raw"].shape == (12, 16, 3)
    np.testing.assert_array_equal(scope["raw"].transpose(2, 0, 1), trained)
    if resize == "crop":  # the centre of an image scaled by 0.6 (to 12 x 22), not the whole image squeezed
        stretched = load_folder(DataConfig(dataset="folder", path=str(tmp_path / "imgs"), image_size=(12, 16),
                                           cache=False)).x[0]
        assert not np.array_equal(stretched, trained)
