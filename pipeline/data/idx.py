"""Reading and writing MNIST-format IDX files (raw or gzip), as published by LeCun et al."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from edgekd.errors import DataError
from edgekd.fileio import write_bytes

# IDX type code -> big-endian numpy dtype
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (`.gz` is decompressed) into an array of its native shape and dtype.

    Raises:
        DataError: the file is not IDX, or is truncated or has trailing bytes.
    """
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: corrupt gzip stream ({exc}); download the file again") from exc
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] not in _DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()}); expected MNIST-format "
                        "files such as train-images-idx3-ubyte(.gz)")
    dtype, ndim = np.dtype(_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: IDX header promises shape {list(shape)} ({expected} bytes) but the file has "
                        f"{len(raw)} bytes; the file is truncated or corrupt, download it again")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write `array` as an IDX file (gzip-compressed when `path` ends in .gz)."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DataError(f"cannot write dtype {array.dtype} as IDX; use one of uint8, int8, int16, int32, float32, float64")
    body = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
    body += np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()
    write_bytes(path, gzip.compress(body, mtime=0) if path.suffix == ".gz" else body)
