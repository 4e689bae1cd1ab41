"""Atomic writes and hashing, shared by every layer: a killed run never leaves a truncated file under
its final name. Everything is written to a temporary name beside the target, then renamed."""
from __future__ import annotations

import hashlib
import io
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


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes(path, buf.getvalue())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-able object, independent of key order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
