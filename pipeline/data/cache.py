"""Decoded image folders kept on disk as one uint8 array (N, C, H, W) each, memory-mapped when read.

An image folder is decoded once; later runs, and the points of `sweep`, `cv` and `search`, map the
array instead of decoding 50,000 JPEGs again. An entry is keyed by what decides its pixels: every
file's path, size and modification time, and the decode settings (grayscale, image_size), so an
edited, added or removed image makes a new entry. The array is written as it is decoded (memory
stays one image, not the dataset), and an entry counts only once its JSON is in place (written last,
by rename), so an interrupted build is never read.

Location: $EDGEKD_CACHE_DIR, else $XDG_CACHE_HOME/edgekd, else ~/.cache/edgekd; `data.cache = false`
decodes into memory instead.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

log = logging.getLogger(__name__)

VERSION = 1  # of the entry format and decode: a change makes new entries


def cache_dir() -> Path:
    if os.environ.get("EDGEKD_CACHE_DIR"):
        return Path(os.environ["EDGEKD_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgekd"


def folder_key(root: Path, names: Iterable[str], settings: dict) -> str:
    """sha256 over the decode settings and every file's path (`names`: relative to root, with /), size
    and mtime. Paths stay strings: 50,000 pathlib objects cost seconds here, on every run."""
    digest = hashlib.sha256(json.dumps({"version": VERSION, **settings}, sort_keys=True).encode())
    base = os.fspath(root)
    for name in names:
        st = os.stat(os.path.join(base, name))
        digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def read_entry(key: str) -> tuple[np.ndarray, dict] | None:
    """(the images, memory-mapped read-only; the entry's facts) or None when there is no whole entry."""
    base = cache_dir() / "images" / key
    try:
        facts = json.loads(base.with_suffix(".json").read_text())
        x = np.load(base.with_suffix(".npy"), mmap_mode="r")
    except (OSError, ValueError):
        return None
    if list(x.shape) != facts.get("shape") or x.dtype != np.uint8:
        return None
    return x, facts


def build_entry(key: str, n: int, decode: Callable[[int], np.ndarray], facts: dict, what: str) -> np.ndarray:
    """Decode images 0..n-1 (each (C, H, W) uint8, all one shape) into a new entry; the entry, mapped.

    Writes straight into the on-disk array, logging progress every 10 s; `facts` go into the JSON."""
    folder = cache_dir() / "images"
    folder.mkdir(parents=True, exist_ok=True)
    base, tmp = folder / key, folder / f"{key}.{os.getpid()}.tmp"
    first = decode(0)
    x = np.lib.format.open_memmap(tmp.with_suffix(".npy"), mode="w+", dtype=np.uint8, shape=(n, *first.shape))
    try:
        x[0] = first
        start = last = time.monotonic()
        for i in range(1, n):
            x[i] = decode(i)
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                rate = (i + 1) / (last - start)
                log.info("decoding %s: %d / %d images (%.0f/s, %.0f s left)", what, i + 1, n, rate, (n - i - 1) / rate)
        x.flush()
        del x
        os.replace(tmp.with_suffix(".npy"), base.with_suffix(".npy"))
        tmp.with_suffix(".json").write_text(json.dumps({**facts, "shape": [n, *first.shape]}))
        os.replace(tmp.with_suffix(".json"), base.with_suffix(".json"))
    finally:
        for leftover in (tmp.with_suffix(".npy"), tmp.with_suffix(".json")):
            leftover.unlink(missing_ok=True)
    log.info("decoded %s: %d images into %s", what, n, base.with_suffix(".npy"))
    return read_entry(key)[0]
