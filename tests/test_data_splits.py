"""Datasets that come split: a folder holding train/ and test/ (or val/), data.test_path and
data.val_path; the other splits labelled in the train set's class order; the errors a user can make."""
import numpy as np
import pytest
from PIL import Image

from edgekd.errors import DataError
from edgekd.pipeline.config import DataConfig
from edgekd.pipeline.data import prepare


def _folder(root, counts: dict[str, int], base=0, size=(6, 6)):
    """Gray PNGs: class c's i-th image is filled with a value that says which file it was."""
    for c, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full(size, base + 40 * c + i, np.uint8)).save(root / name / f"{i}.png")


def test_folder_with_train_and_test_folders_uses_them_as_splits(tmp_path):
    _folder(tmp_path / "train", {"cat": 10, "dog": 12, "emu": 8})
    _folder(tmp_path / "test", {"dog": 3, "cat": 2}, base=1)  # no emu in test; written in another order
    ds = prepare(DataConfig(dataset="folder", path=str(tmp_path), val_fraction=0.2), seed=0)
    assert ds.labels == ["cat", "dog", "emu"]  # the train folder's classes, sorted, not two classes "test"/"train"
    assert np.bincount(ds.y_test, minlength=3).tolist() == [2, 3, 0]
    assert len(ds.y_train) + len(ds.y_val) == 30 and np.bincount(ds.y_val).tolist() == [2, 2, 2]
    # the test images are the test folder's files, labelled by name: dog's were written first (values 1, 2,
    # 3), cat's second (41, 42), and cat is class 0 in the train set
    raw = np.round((np.asarray(ds.x_test) * ds.std[0] + ds.mean[0]) * 255)[:, 0, 0, 0]
    assert sorted(zip(ds.y_test.tolist(), raw.tolist())) == [(0, 41), (0, 42), (1, 1), (1, 2), (1, 3)]


def test_val_folder_replaces_the_validation_split(tmp_path):
    _folder(tmp_path / "train", {"a": 6, "b": 6})
    _folder(tmp_path / "val", {"a": 2, "b": 1}, base=100)
    _folder(tmp_path / "test", {"a": 1, "b": 1}, base=200)
    ds = prepare(DataConfig(dataset="folder", path=str(tmp_path)), seed=0)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (12, 3, 2)
    assert ds.y_val.tolist() == [0, 0, 1]


def test_explicit_test_path_for_npz(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", x=rng.integers(0, 255, (40, 5, 5), np.uint8), y=np.arange(40) % 4)
    np.savez(tmp_path / "test.npz", x=rng.integers(0, 255, (7, 5, 5), np.uint8), y=np.array([3, 3, 0, 1, 2, 2, 1]))
    ds = prepare(DataConfig(dataset="npz", path=str(tmp_path / "train.npz"), test_path=str(tmp_path / "test.npz"),
                            val_fraction=0.25), seed=0)
    assert ds.y_test.tolist() == [3, 3, 0, 1, 2, 2, 1] and len(ds.y_train) == 32 and len(ds.y_val) == 8  # round(0.25 * 10) = 2 per class


def test_test_class_the_train_set_lacks_is_named(tmp_path):
    _folder(tmp_path / "train", {"cat": 5, "dog": 5})
    _folder(tmp_path / "test", {"cat": 2, "yak": 2})
    with pytest.raises(DataError, match="the test set has class\\(es\\) 'yak' that the train set"):
        prepare(DataConfig(dataset="folder", path=str(tmp_path)), seed=0)


def test_test_images_of_another_size_are_named(tmp_path):
    _folder(tmp_path / "train", {"cat": 5, "dog": 5})
    _folder(tmp_path / "other", {"cat": 2, "dog": 2}, size=(7, 7))
    with pytest.raises(DataError, match=r"test images of shape \[1, 7, 7\], train images of \[1, 6, 6\]"):
        prepare(DataConfig(dataset="folder", path=str(tmp_path / "train"), test_path=str(tmp_path / "other")), seed=0)
    # data.image_size resizes every split alike
    ds = prepare(DataConfig(dataset="folder", path=str(tmp_path / "train"), test_path=str(tmp_path / "other"),
                            image_size=(4, 4)), seed=0)
    assert ds.x_test.shape == (4, 1, 4, 4)


def test_a_plain_class_folder_named_train_is_still_a_class(tmp_path):
    _folder(tmp_path, {"train": 6, "bus": 6})  # class folders hold images, and "bus" is not a split name
    ds = prepare(DataConfig(dataset="folder", path=str(tmp_path)), seed=0)
    assert ds.labels == ["bus", "train"]


def test_test_path_on_a_bundled_dataset_is_a_config_error(tmp_path, capsys):
    from edgekd.pipeline.cli import main
    from tests.helpers import ROOT

    code = main(["run", str(ROOT / "configs" / "digits.toml"), "--out", str(tmp_path / "r"),
                 "--set", f"data.test_path={tmp_path}"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "data.test_path: dataset 'digits' is bundled" in err and "Traceback" not in err
