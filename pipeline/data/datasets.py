"""Datasets: the loaders' output (pipeline.data.loaders) combined into splits, checked, split by seed
where the data do not come split, normalised with train-only statistics, and written as eval.npz.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekd.errors import DataError
from edgekd.fileio import write_npz
from edgekd.pipeline.data.images import Images, channel_stats
from edgekd.pipeline.data.loaders import DATASETS, RawData

if TYPE_CHECKING:
    from edgekd.pipeline.config import DataConfig

log = logging.getLogger(__name__)

__all__ = ["DATASETS", "Dataset", "RawData", "load", "prepare", "write_eval"]


@dataclass
class Dataset:
    """Split data ready for training and for runtimes: each split's images normalised when read
    (pipeline.data.images), with train-only statistics."""

    name: str
    labels: list[str]
    x_train: Images
    y_train: np.ndarray
    x_val: Images
    y_val: np.ndarray
    x_test: Images
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

    @property
    def float_bytes(self) -> int:
        """What the three splits take as float32."""
        return sum(x.nbytes for x in (self.x_train, self.x_val, self.x_test))

    def fingerprint(self) -> str:
        """sha256 over every split and the statistics: the input hash of the training stages. Splits are
        walked in chunks (memory stays one chunk); float pixels are hashed as the normalised float32
        arrays (the digest equals the whole arrays'), uint8 pixels as they are, a quarter of the bytes
        and no arithmetic (the statistics, hashed too, fix the rest)."""
        digest = hashlib.sha256()
        for x, y in ((self.x_train, self.y_train), (self.x_val, self.y_val), (self.x_test, self.y_test)):
            digest.update(str(x.shape).encode())
            raw = x.pixels.dtype == np.uint8
            if raw:
                digest.update(b"uint8 pixels, normalised when read\n")
            for chunk in (x.raw_chunks() if raw else x.chunks()):
                digest.update(memoryview(np.ascontiguousarray(chunk)).cast("B"))
            digest.update(str(y.shape).encode())
            digest.update(memoryview(np.ascontiguousarray(y)).cast("B"))
        for arr in (self.mean, self.std):
            digest.update(str(arr.shape).encode())
            digest.update(memoryview(np.ascontiguousarray(arr)).cast("B"))
        digest.update("\n".join(self.labels).encode())
        return digest.hexdigest()

    def summary(self) -> dict:
        return {"name": self.name, "num_classes": self.num_classes, "input_shape": list(self.in_shape),
                "n_train": len(self.y_train), "n_val": len(self.y_val), "n_test": len(self.y_test),
                "labels": self.labels, "mean": self.mean.tolist(), "std": self.std.tolist(),
                "pixel_max": self.pixel_max}


# the names of the split folders of an ImageNet-style layout (path/train/<class>/, path/test/<class>/, ...)
SPLIT_FOLDERS = {"train": "train", "test": "test", "val": "val", "valid": "val", "validation": "val"}


def split_layout(root: Path) -> dict[str, Path]:
    """{"train": .., "test": .., "val": ..} when `root` holds train/ and a test/ or val/ folder and nothing
    else (each then holds one folder per class); {} for a plain folder of class folders."""
    if not root.is_dir():
        return {}
    subs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    if "train" not in subs or len(subs) < 2 or set(subs) - set(SPLIT_FOLDERS):
        return {}
    return {SPLIT_FOLDERS[name]: path for name, path in subs.items()}


def _relabel(part: RawData, labels: list[str], what: str, path: str) -> np.ndarray:
    """`part`'s labels as ids into the train set's `labels`, matched by class name (a test set may lack
    classes, never add one)."""
    unknown = [name for name in part.labels if name not in labels]
    if unknown:
        raise DataError(f"{path}: the {what} set has class(es) {', '.join(map(repr, unknown[:5]))} that the train set "
                        f"({len(labels)} classes: {', '.join(labels[:5])}{' ...' if len(labels) > 5 else ''}) lacks; a "
                        "model cannot learn a class it never sees: add its images to the train set or remove them")
    return np.asarray([labels.index(name) for name in part.labels], np.int64)[part.y]


def load(cfg: DataConfig) -> RawData:
    """The dataset as loaded: the train files, and the test and validation sets where the data come split
    (data.test_path / data.val_path, or a folder holding train/ and test/ or val/), labelled in the train
    set's class order."""
    spec = DATASETS[cfg.dataset]
    paths = {"train": cfg.path, "test": cfg.test_path, "val": cfg.val_path}
    layout = split_layout(Path(cfg.path)) if cfg.dataset == "folder" else {}
    if layout:
        paths = {split: paths[split] or str(layout.get(split, "")) for split in paths}
        paths["train"] = str(layout["train"])
        log.info("data: %s holds split folders (%s)", cfg.path, ", ".join(sorted(layout)))
    raw = spec.loader(dataclasses.replace(cfg, path=paths["train"]))
    for split in ("test", "val"):
        if not paths[split]:
            continue
        # the same channels as the train set: "auto" could otherwise decide gray for one split and RGB for another
        same = dataclasses.replace(cfg, path=paths[split], grayscale=raw.x.shape[1] == 1 if cfg.dataset == "folder"
                                   else cfg.grayscale)
        part = spec.loader(same)
        if part.x.shape[1:] != raw.x.shape[1:]:
            raise DataError(f"{paths[split]}: {split} images of shape {list(part.x.shape[1:])}, train images of "
                            f"{list(raw.x.shape[1:])}; give both the same size (for folders: data.image_size)")
        y = _relabel(part, raw.labels, split, paths[split])
        check(part.x, y, len(raw.labels), f"{paths[split]} ({split} set)", every_class=False)
        raw = dataclasses.replace(raw, **{f"x_{split}": part.x, f"y_{split}": y})
    if raw.x_test is not None and not paths["test"]:  # the loader's own test files (idx's t10k)
        check(raw.x_test, raw.y_test, len(raw.labels), raw.source + " (test files)", every_class=False)
    return raw


def check(x: np.ndarray, y: np.ndarray, num_classes: int, source: str, every_class: bool = True) -> None:
    """Raise DataError naming `source` when the arrays cannot be trained on."""
    if x.ndim != 4:
        raise DataError(f"{source}: images have rank {x.ndim}; expected 4 (N, C, H, W)")
    if len(x) != len(y):
        raise DataError(f"{source}: {len(x)} images but {len(y)} labels; they must match one to one")
    if len(y) == 0:
        raise DataError(f"{source}: no samples")
    bad = ~np.isfinite(x) if x.dtype.kind == "f" else np.zeros(1, bool)  # pixels stored as integers are finite
    if bad.any():
        first = int(np.argwhere(bad.reshape(len(x), -1).any(axis=1))[0, 0])
        raise DataError(f"{source}: {int(bad.sum())} NaN or infinite pixel values (first in sample {first}); "
                        "clean or drop those samples")
    out = (y < 0) | (y >= num_classes)
    if out.any():
        raise DataError(f"{source}: label {int(y[out][0])} out of range (found {int(out.sum())} such); "
                        f"expected class ids 0..{num_classes - 1}")
    counts = np.bincount(y, minlength=num_classes)
    if every_class and (counts == 0).any():
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
    splits = (["train"] + (["validation"] if cfg.val_fraction > 0 and raw.x_val is None else [])
              + (["test"] if raw.x_test is None else []))
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
    raw = load(cfg)
    check(raw.x, raw.y, len(raw.labels), raw.source)
    if cfg.folds:  # k-fold: every sample of every split is dealt into folds; validation comes from the rest
        parts = [(x, y) for x, y in ((raw.x, raw.y), (raw.x_test, raw.y_test), (raw.x_val, raw.y_val)) if x is not None]
        raw = dataclasses.replace(raw, x=np.concatenate([x for x, _ in parts]), y=np.concatenate([y for _, y in parts]),
                                  x_test=None, y_test=None, x_val=None, y_val=None)
    _check_splittable(raw, cfg)
    rng = np.random.default_rng(seed)
    everything = np.arange(len(raw.y))
    # each split: (pixels, labels, rows of them); no pixel is copied until a batch is read
    if cfg.folds:
        is_test = stratified_folds(raw.y, cfg.folds, seed) == cfg.fold
        test, rest = (raw.x, raw.y, everything[is_test]), everything[~is_test]
    elif raw.x_test is not None:  # checked where it was loaded
        test, rest = (raw.x_test, raw.y_test, np.arange(len(raw.y_test))), everything
    else:
        rest, held = _stratified(raw.y, cfg.test_fraction, rng)
        test = (raw.x, raw.y, held)
    if raw.x_val is not None:
        train, val = (raw.x, raw.y, rest), (raw.x_val, raw.y_val, np.arange(len(raw.y_val)))
    else:
        keep, held = _stratified(raw.y[rest], cfg.val_fraction, rng)
        train, val = (raw.x, raw.y, rest[keep]), (raw.x, raw.y, rest[held])
    mean, std = channel_stats(train[0], train[2])
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        (Images(pixels, rows, mean, std), labels[rows]) for pixels, labels, rows in (train, val, test))
    ds = Dataset(cfg.dataset, raw.labels, x_train, y_train, x_val, y_val, x_test, y_test, mean, std, raw.pixel_max)
    log.info("data %s: %d train / %d val / %d test, input %s, %d classes", ds.name, len(ds.y_train),
             len(ds.y_val), len(ds.y_test), list(ds.in_shape), ds.num_classes)
    return ds


def write_eval(ds: Dataset, path: Path) -> None:
    """Write the test split exactly as runtimes see it (normalised float32 NCHW) plus its metadata,
    deflated: normalised integer pixels repeat, and the file is what `pack` copies to a device."""
    write_npz(path, compress=True, x=ds.x_test, y=ds.y_test, mean=ds.mean, std=ds.std,
              pixel_max=np.float32(ds.pixel_max), labels=np.asarray(ds.labels))
