"""The eval set (data/eval.npz: x float32 NCHW, y int64): checked from its .npy headers before a byte is
decompressed, loaded without copies, and scored into accuracy and per-sample correctness bits."""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from edgekd.bench.agent.limits import DEFAULT_MAX_BYTES, mib
from edgekd.errors import AgentError


def npz_arrays(path: Path, max_bytes: int) -> dict[str, tuple[tuple, np.dtype]]:
    """name -> (shape, dtype) of every array in an .npz, read from the .npy headers alone, so that an
    oversized or non-numeric eval set is refused before a byte of its data is decompressed."""
    what = f"{path}: not an edgekd eval file (an .npz with arrays x and y)"
    arrays, total = {}, 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = info.filename.removesuffix(".npy")
                if name in arrays:
                    raise AgentError(f"{path}: array {name!r} appears twice; re-create the eval set with `edgekd run`")
                with archive.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(fh)
                arrays[name] = (shape, dtype)
                total += math.prod(shape) * dtype.itemsize
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise AgentError(f"{what} ({exc})") from None
    if total > max_bytes:
        raise AgentError(f"{path}: its arrays take {mib(total)} decompressed, over the agent's ceiling of {mib(max_bytes)}; "
                         "an eval set of a few thousand images takes a few MB: re-create it, or raise --max-bytes")
    return arrays


def check_eval(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Refuse (exit 2) an eval set over `max_bytes`, without x and y of numbers, or of the wrong shapes."""
    arrays = npz_arrays(path, max_bytes)
    if "x" not in arrays or "y" not in arrays:
        raise AgentError(f"{path}: not an edgekd eval file: it holds {sorted(arrays) or 'no arrays'}, expected x and y")
    (x_shape, x_dtype), (y_shape, y_dtype) = arrays["x"], arrays["y"]
    if x_dtype.kind not in "fiu" or y_dtype.kind not in "iu":
        raise AgentError(f"{path}: x must hold numbers and y integer class labels; got x of dtype {x_dtype} and y of "
                         f"dtype {y_dtype}; re-create it with `edgekd run` (data/eval.npz)")
    if len(x_shape) != 4 or len(y_shape) != 1 or x_shape[0] != y_shape[0] or not x_shape[0]:
        raise AgentError(f"{path}: expected x of shape (N, C, H, W) and y of shape (N,); got {x_shape} and {y_shape}")


def load_eval(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """x float32 (N, C, H, W) and y int64 (N,), refused (exit 2) when over `max_bytes` or not numbers."""
    check_eval(path, max_bytes)
    try:
        with np.load(path, allow_pickle=False) as f:
            # copy=False: an eval set already float32/int64 is never copied, so loading it leaves no
            # transient peak that would hide the model's own memory (see `worker`)
            x, y = f["x"].astype(np.float32, copy=False), f["y"].astype(np.int64, copy=False)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise AgentError(f"{path}: not an edgekd eval file with arrays x and y ({exc})") from None
    return x, y


def accuracy_fields(pred: np.ndarray, y: np.ndarray) -> dict:
    """accuracy, n_eval and correct_bits: which samples (in eval-set order) the file got right, packed
    big-endian (np.packbits), so a report can pair two files sample by sample; accuracy is exactly
    popcount / n_eval."""
    correct = np.asarray(pred).reshape(-1) == y
    return {"accuracy": int(correct.sum()) / len(y), "n_eval": int(len(y)),
            "correct_bits": np.packbits(correct).tobytes().hex()}

