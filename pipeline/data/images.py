"""One split's images, normalised when read: the pixels stay as loaded (uint8 from the decoded-image
cache, or float in [0, 1]) and a batch becomes float32 `(pixels / scale - mean) / std` only when it is
taken, so a dataset is never held as float32 whole.

Pixels in a cache file are read with `os.pread`, not through the memory map: the pages of a map stay
in the process's resident set once touched, and an epoch touches them all (1.5 GB for 10,000 images at
224 px); pread goes through the page cache, which the kernel reclaims and no RSS counts.

A batch normalised here is bit for bit the same as the same rows of the whole split normalised at once
(the same float32 operations per element), so streaming changes memory, never results.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

CHUNK_BYTES = 64 << 20  # of float32 per chunk when a whole split is walked (statistics, hash, eval file)
STREAM_ABOVE_BYTES = 512 << 20  # data.stream = "auto" streams splits that would take more as float32


def streams(setting: str | bool, float_bytes: int) -> bool:
    """Whether training reads batches from the pixels (True) or holds the splits as float32 (False)."""
    return setting is True or (setting == "auto" and float_bytes > STREAM_ABOVE_BYTES)


def read_rows(pixels: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """pixels[rows] (rows sorted or not), read with pread from the file behind a memory-mapped array."""
    if not isinstance(pixels, np.memmap) or pixels.filename is None or not len(rows):
        return np.asarray(pixels[rows])
    row_bytes = pixels.itemsize * int(np.prod(pixels.shape[1:]))
    out = np.empty((len(rows), *pixels.shape[1:]), pixels.dtype)
    flat = out.reshape(len(rows), -1).view(np.uint8)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    # runs of consecutive rows are read with one call: a whole-split walk is a handful of large reads
    breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
    fd = os.open(pixels.filename, os.O_RDONLY)
    try:
        for run in np.split(np.arange(len(rows)), breaks):
            first, count = int(sorted_rows[run[0]]), len(run)
            data = os.pread(fd, row_bytes * count, pixels.offset + first * row_bytes)
            if len(data) != row_bytes * count:
                raise OSError(f"{pixels.filename}: short read (the cache file was truncated); remove it to decode again")
            flat[order[run]] = np.frombuffer(data, np.uint8).reshape(count, row_bytes)
    finally:
        os.close(fd)
    return out


@dataclass(frozen=True, eq=False)
class Images:
    """Rows `rows` of `pixels` (N, C, H, W), read as float32 normalised with per-channel `mean`, `std`.

    Supports what the pipeline asks of an image array: len, shape, dtype, indexing by int, slice, index
    array or boolean mask (float32 ndarray), and np.asarray (the whole split, kept after the first call).
    """

    pixels: np.ndarray
    rows: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    _whole: list = field(default_factory=list, repr=False)  # the materialised split, once asked for

    @property
    def scale(self) -> np.float32:
        return np.float32(255.0) if self.pixels.dtype == np.uint8 else np.float32(1.0)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.pixels.shape[1:])

    dtype = np.dtype(np.float32)
    ndim = 4

    @property
    def nbytes(self) -> int:
        return 4 * int(np.prod(self.shape))

    def __len__(self) -> int:
        return len(self.rows)

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        """float32 (raw / scale - mean) / std in one new array: the same operations as on a whole split."""
        out = raw.astype(np.float32, order="C")
        if raw.dtype == np.uint8:
            out /= self.scale
        out -= self.mean[None, :, None, None]
        out /= self.std[None, :, None, None]
        return out

    def raw(self, key=slice(None)) -> np.ndarray:
        """The pixels of the selected rows, as stored (uint8 or float)."""
        return read_rows(self.pixels, np.atleast_1d(self.rows[key]))

    def __getitem__(self, key) -> np.ndarray:
        if self._whole:
            return self._whole[0][key]
        if isinstance(key, (int, np.integer)):
            return self.normalise(self.raw(key))[0]
        return self.normalise(self.raw(np.asarray(key) if not isinstance(key, slice) else key))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if not self._whole:
            self._whole.append(self.normalise(self.raw()))
        return self._whole[0] if dtype is None else self._whole[0].astype(dtype, copy=False)

    def spans(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[slice]:
        """Consecutive slices over the split, each about `chunk_bytes` of float32."""
        step = max(1, chunk_bytes // (4 * int(np.prod(self.shape[1:]))))
        return (slice(start, start + step) for start in range(0, len(self), step))

    def chunks(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
        """The whole split, normalised, in consecutive chunks of about `chunk_bytes`."""
        return (self[span] for span in self.spans(chunk_bytes))

    def raw_chunks(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
        """The whole split as stored, in the same chunks."""
        return (self.raw(span) for span in self.spans(chunk_bytes))


def channel_stats(pixels: np.ndarray, rows: np.ndarray, chunk_bytes: int = CHUNK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (float32, std at least 1e-6) of pixels[rows] scaled to [0, 1].

    Float pixels (in memory) use numpy's own reductions over the split, as before there was a cache, so
    the bundled datasets keep their statistics to the last bit; uint8 pixels are summed in float64 over
    chunks, so no float copy of the split is made."""
    if pixels.dtype != np.uint8:
        x = pixels[rows]
        return x.mean(axis=(0, 2, 3)).astype(np.float32), np.maximum(x.std(axis=(0, 2, 3)), 1e-6).astype(np.float32)
    chunk = max(1, chunk_bytes // (8 * int(np.prod(pixels.shape[1:]))))
    total, squares, count = np.zeros(pixels.shape[1]), np.zeros(pixels.shape[1]), 0
    for i in range(0, len(rows), chunk):
        part = read_rows(pixels, rows[i:i + chunk]).astype(np.float64) * (1 / 255.0)
        total += part.sum(axis=(0, 2, 3))
        squares += np.square(part).sum(axis=(0, 2, 3))
        count += part.shape[0] * part.shape[2] * part.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)
