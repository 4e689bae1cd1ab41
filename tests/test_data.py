"""Datasets: IDX round trip, stratified deterministic splits, train-only normalisation, bad data."""
import numpy as np
import pytest
from PIL import Image

from edgekd.pipeline.config import DataConfig
from edgekd.pipeline.data import prepare, write_eval
from edgekd.errors import DataError
from edgekd.pipeline.data.idx import read_idx, write_idx


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip_is_bit_exact(tmp_path, suffix, dtype):
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal((7, 5, 3)) * 100).astype(dtype)
    path = tmp_path / f"a-idx3{suffix}"
    write_idx(path, arr)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == arr.shape
    assert back.tobytes() == arr.tobytes()


def test_idx_truncated_file_is_a_data_error(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, np.zeros((10, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(path)


def _write_mnist_like(root, n_train=200, n_test=50, gz=True):
    rng = np.random.default_rng(1)
    ext = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n, dtype=np.uint8) % 10
        x = rng.integers(0, 256, (n, 12, 12), dtype=np.uint8)
        write_idx(root / f"{split}-images-idx3-ubyte{ext}", x)
        write_idx(root / f"{split}-labels-idx1-ubyte{ext}", y)
    return root


def test_idx_dataset_uses_t10k_as_test_split(tmp_path):
    ds = prepare(DataConfig(dataset="idx", path=str(_write_mnist_like(tmp_path)), val_fraction=0.1), seed=0)
    assert ds.in_shape == (1, 12, 12) and ds.num_classes == 10
    assert len(ds.y_test) == 50 and len(ds.y_train) + len(ds.y_val) == 200
    assert np.bincount(ds.y_val).tolist() == [2] * 10


def test_splits_are_stratified_disjoint_and_seeded():
    a, b, c = (prepare(DataConfig(dataset="digits"), seed=s) for s in (0, 0, 1))
    assert np.array_equal(np.asarray(a.x_test), np.asarray(b.x_test)) and a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    n = len(a.y_train) + len(a.y_val) + len(a.y_test)
    assert n == 1797
    # each class keeps its share of the test split to within one sample
    full = np.bincount(np.concatenate([a.y_train, a.y_val, a.y_test]))
    assert np.all(np.abs(np.bincount(a.y_test) - 0.2 * full) <= 1)
    rows = {r.tobytes() for r in np.asarray(a.x_train)}
    assert sum(r.tobytes() in rows for r in np.asarray(a.x_test)) <= 5  # digits has a few duplicate images, no shared indices


def test_normalisation_uses_train_statistics_only():
    ds = prepare(DataConfig(dataset="digits"), seed=0)
    assert abs(float(np.asarray(ds.x_train).mean())) < 1e-5
    assert float(np.asarray(ds.x_train).std()) == pytest.approx(1.0, abs=1e-4)
    assert abs(float(np.asarray(ds.x_test).mean())) > 1e-4  # test keeps its own offset: not re-normalised


def test_eval_npz_is_the_test_split_as_runtimes_see_it(tmp_path):
    ds = prepare(DataConfig(dataset="digits"), seed=0)
    write_eval(ds, tmp_path / "eval.npz")
    with np.load(tmp_path / "eval.npz") as f:
        assert f["x"].dtype == np.float32 and f["x"].shape == (359, 1, 8, 8)
        assert f["y"].dtype == np.int64
        np.testing.assert_array_equal(f["x"], np.asarray(ds.x_test))
        assert f["labels"].tolist() == [str(i) for i in range(10)]
    import zipfile

    with zipfile.ZipFile(tmp_path / "eval.npz") as archive:  # deflated: a third of the float32 bytes on digits
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_DEFLATED}
        assert (tmp_path / "eval.npz").stat().st_size < 0.5 * sum(i.file_size for i in archive.infolist())


def _npz(tmp_path, x, y, **extra):
    path = tmp_path / "user.npz"
    np.savez(path, x=x, y=y, **extra)
    return DataConfig(dataset="npz", path=str(path))


def test_npz_nhwc_layout(tmp_path):
    x = np.random.default_rng(0).random((40, 6, 5, 3), dtype=np.float32)
    cfg = _npz(tmp_path, x, np.arange(40) % 4)
    ds = prepare(DataConfig(dataset="npz", path=cfg.path, layout="nhwc"), seed=0)
    assert ds.in_shape == (3, 6, 5)


@pytest.mark.parametrize("x, y, extra, needle", [
    (np.full((20, 4, 4), np.nan, np.float32), np.arange(20) % 2, {}, "NaN or infinite"),
    (np.zeros((20, 16), np.float32), np.arange(20) % 2, {}, "x has rank 2"),
    (np.zeros((20, 4, 4), np.float32), np.arange(20) % 3, {"labels": np.array(["a", "b"])}, "label 2 out of range"),
    (np.zeros((20, 4, 4), np.float32), (np.arange(20) % 2) * 2, {}, "empty class(es) [1]"),
    (np.zeros((20, 4, 4), np.float32), np.arange(19) % 2, {}, "20 images but 19 labels"),
])
def test_bad_npz_data_is_named(tmp_path, x, y, extra, needle):
    cfg = _npz(tmp_path, x, y, **extra)
    with pytest.raises(DataError) as err:
        prepare(cfg, seed=0)
    assert needle in str(err.value) and "user.npz" in str(err.value)


def _png(path, value, size=(6, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, np.uint8)).save(path)


def test_folder_dataset(tmp_path):
    for c, v in (("cat", 10), ("dog", 200)):
        for i in range(10):
            _png(tmp_path / c / f"{i}.png", v + i)
    ds = prepare(DataConfig(dataset="folder", path=str(tmp_path), test_fraction=0.2), seed=0)
    assert ds.labels == ["cat", "dog"] and ds.in_shape == (1, 6, 6)  # gray PNGs: one channel, found by itself
    assert np.bincount(ds.y_test).tolist() == [2, 2]
    rgb = prepare(DataConfig(dataset="folder", path=str(tmp_path), image_size=(4, 3), grayscale=False), seed=0)
    assert rgb.in_shape == (3, 4, 3)


def test_folder_of_color_images_keeps_three_channels(tmp_path):
    for c in ("a", "b"):
        for i in range(4):
            path = tmp_path / c / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((5, 5, 3), 40 * i, np.uint8)).save(path)
    assert prepare(DataConfig(dataset="folder", path=str(tmp_path)), seed=0).in_shape == (3, 5, 5)


@pytest.mark.parametrize("images_per_class, classes, needle", [
    (1, ("cat", "dog"), "'cat' has 1; 'dog' has 1; each class needs at least 3"),
    (10, ("cat",), "only one class ('cat')"),
])
def test_folder_too_small_to_split_is_a_data_error(tmp_path, images_per_class, classes, needle):
    for c in classes:
        for i in range(images_per_class):
            _png(tmp_path / c / f"{i}.png", 10 * i)
    with pytest.raises(DataError, match="") as err:
        prepare(DataConfig(dataset="folder", path=str(tmp_path)), seed=0)
    assert needle in str(err.value)


def test_folder_empty_class_and_mixed_sizes(tmp_path):
    _png(tmp_path / "a" / "0.png", 1)
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError, match="empty class"):
        prepare(DataConfig(dataset="folder", path=str(tmp_path)), seed=0)
    _png(tmp_path / "b" / "0.png", 1, size=(7, 6))
    with pytest.raises(DataError, match="set data.image_size"):
        prepare(DataConfig(dataset="folder", path=str(tmp_path)), seed=0)


def _cli_error(tmp_path, capsys, *overrides: str) -> tuple[int, str]:
    from edgekd.pipeline.cli import main
    from tests.helpers import ROOT

    code = main(["run", str(ROOT / "configs" / "digits.toml"), "--out", str(tmp_path / "r"),
                 *[a for o in overrides for a in ("--set", o)]])
    return code, " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("x, y, needle", [
    (np.array([["a"] * 16] * 30).reshape(30, 4, 4), np.arange(30) % 3, "x has dtype <U1 (strings)"),
    (np.array([["1.0"] * 16] * 30).reshape(30, 4, 4), np.arange(30) % 3, "x has dtype <U3 (strings)"),
    (np.zeros((30, 4, 4), np.float32), np.array(["cat", "dog", "emu"] * 10), "y has dtype <U3 (strings)"),
    (np.zeros((30, 4, 4), np.float32), np.array([b"c", b"d", b"e"] * 10), "y has dtype |S1 (bytes)"),
    (np.array([None] * 30, dtype=object), np.arange(30) % 3, "array 'x' holds Python objects"),
    (np.zeros((30, 4, 4), np.float32), np.array([0, 1, 2] * 10, dtype=object), "array 'y' holds Python objects"),
])
def test_npz_of_strings_or_objects_exits_2_naming_the_array(tmp_path, capsys, x, y, needle):
    np.savez(tmp_path / "user.npz", x=x, y=y)  # np.savez pickles object arrays; np.load refuses them
    code, err = _cli_error(tmp_path, capsys, "data.dataset=npz", f"data.path={tmp_path / 'user.npz'}")
    assert code == 2 and needle in err and "user.npz" in err and "Traceback" not in err, err
    assert not list((tmp_path / "r").glob("*")), "nothing is written"


def test_a_class_folder_whose_name_is_not_utf8_exits_2_naming_its_bytes(tmp_path, capsys):
    import os

    root = tmp_path / "images"
    for name in (b"caf\xe9", b"tea"):  # Latin-1 "café", as an old camera or a Windows share writes it
        folder = os.path.join(os.fsencode(root), name)
        os.makedirs(folder)
        for i in range(5):
            Image.fromarray(np.full((6, 6), 20 * i, np.uint8)).save(os.path.join(folder, b"%d.png" % i))
    code, err = _cli_error(tmp_path, capsys, "data.dataset=folder", f"data.path={root}")
    assert code == 2 and "class folder b'caf\\xe9' has a name that is not valid UTF-8" in err, err
    assert "rename the folder" in err and "Traceback" not in err
    assert not list((tmp_path / "r").glob("*")), "nothing is written"
