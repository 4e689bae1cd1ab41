"""Atomic writes and hashing, shared by every layer: a killed run never leaves a truncated file under
its final name. Everything is written to a temporary name beside the target, then renamed."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

STALE_GLOB = ".*.tmp*"  # what atomic_path leaves behind only when the process is killed


@contextmanager
def atomic_path(path: Path, *, keep_suffix: bool = False, commit: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds rename it onto `path`, else remove it.

    Args:
        keep_suffix: end the temporary name with `path`'s suffix (converters insist on ".onnx", ".tflite").
        commit: False for scratch files that must never reach `path` (removed either way).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + (path.suffix if keep_suffix else ""),
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if commit:
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp_path, path)
            if os.environ.get("EDGEKD_TRACE_WRITES"):  # tests: which process wrote which file, how often
                with open(os.environ["EDGEKD_TRACE_WRITES"], "a") as trace:
                    trace.write(f"{os.getpid()}\t{os.environ.get('RANK', '-')}\t{path}\n")
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_npz(path: Path, *, compress: bool = False, **arrays: np.ndarray) -> None:
    """An .npz written straight to its temporary file, array by array (no in-memory copy of the
    archive); `compress` deflates each at zlib level 1 (numpy's savez_compressed uses 6: on a 1.2 GB
    eval set about as small, several times slower), which np.load reads back as any .npz.

    An array may also be anything with `shape`, `dtype` and `chunks()` yielding its consecutive rows
    (pipeline.data.images.Images): it is written chunk by chunk, the same bytes as the whole array."""
    import zipfile

    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=method, compresslevel=1 if compress else None,
                                                   allowZip64=True) as archive:
        for name, array in arrays.items():
            # a fixed timestamp: the same arrays make the same bytes (and sha256), whenever written
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            # the level open(name) would copy from the archive: compress_level from Python 3.13, _compresslevel before
            setattr(info, "compress_level" if hasattr(info, "compress_level") else "_compresslevel", archive.compresslevel)
            with archive.open(info, "w", force_zip64=True) as member:
                if not hasattr(array, "chunks"):
                    np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
                    continue
                np.lib.format.write_array_header_1_0(member, {"descr": np.lib.format.dtype_to_descr(array.dtype),
                                                              "fortran_order": False, "shape": tuple(array.shape)})
                for chunk in array.chunks():
                    member.write(np.ascontiguousarray(chunk, dtype=array.dtype).data)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-able object, independent of key order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
