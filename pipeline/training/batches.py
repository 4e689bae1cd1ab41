"""Training inputs read batch by batch: `Streamed`, a split (or the transfer set built from it) that
`fit`, `predict` and the teacher signal index like a tensor, and the image shifts that jitter uses.

A split small enough to hold as float32 is handed to training as one tensor (the fastest way to draw
batches); a larger one as a `Streamed`, which reads and normalises only the batch asked for. The
transfer set's jittered copies are kept as one drawn shift per row and applied when the row is read:
the same generator calls as jittering the whole split, so both ways give the same tensors bit for bit.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from edgekd.pipeline.data.images import Images, read_rows

NO_SHIFT = -1
BATCH_BYTES = 64 << 20  # of float32 input per inference batch: 1,024 small images, about 100 at 224 px


def rows_per_batch(x: Tensor | Streamed, most: int) -> int:
    """Rows per inference batch: `most`, fewer where images are large (the activations scale with them)."""
    return max(1, min(most, BATCH_BYTES // (4 * int(np.prod(x.shape[1:])))))


def draw_offsets(n: int, max_shift: int, generator: torch.Generator) -> Tensor:
    """One shift per image, as an index into the (2 * max_shift + 1)² offsets."""
    side = 2 * max_shift + 1
    return torch.randint(0, side * side, (n,), generator=generator)


def shift_images(x: Tensor, max_shift: int, offsets: Tensor, mode: str = "replicate") -> Tensor:
    """Shift image i by offsets[i] (see draw_offsets) with its edges replicated (or, with mode
    "constant", filled with 0: the train mean after normalisation); NO_SHIFT leaves it as it is."""
    n, _, h, w = x.shape
    side = 2 * max_shift + 1
    padded = F.pad(x, (max_shift,) * 4, mode=mode)
    offsets = offsets.to(x.device)
    out = x.clone() if bool((offsets == NO_SHIFT).any()) else torch.empty_like(x)
    for key in offsets.unique().tolist():  # at most side² slices per batch instead of n
        if key == NO_SHIFT:
            continue
        sel = (offsets == key).nonzero().squeeze(1)
        dy, dx = divmod(key, side)
        out[sel] = padded[sel, :, dy:dy + h, dx:dx + w]
    return out


class Streamed:
    """Rows `positions` of a split's images, each shifted by its own offset (NO_SHIFT: none), read as
    float32 tensors on `device` when indexed; len, shape, dim() and device as a tensor has them."""

    def __init__(self, images: Images, device: torch.device, positions: np.ndarray | None = None,
                 offsets: np.ndarray | None = None, max_shift: int = 0):
        self.images, self.device, self.max_shift = images, torch.device(device), max_shift
        self.positions = np.arange(len(images)) if positions is None else np.asarray(positions)
        self.offsets = np.full(len(self.positions), NO_SHIFT) if offsets is None else np.asarray(offsets)
        # per batch, little work: the pixel rows looked up once, pixels held in memory indexed by torch (the batch
        # stays in torch from indexing to normalisation), shifts applied only where there are any
        self._rows = torch.from_numpy(images.rows[self.positions])
        self._offsets = torch.from_numpy(self.offsets) if (self.offsets != NO_SHIFT).any() else None
        mapped = isinstance(images.pixels, np.memmap)
        self._pixels = None if mapped else torch.from_numpy(np.asarray(images.pixels))
        self._mean = torch.from_numpy(images.mean)[None, :, None, None]
        self._std = torch.from_numpy(images.std)[None, :, None, None]

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.images.shape[1:]))

    def dim(self) -> int:
        return 4

    def __getitem__(self, key) -> Tensor:
        single = isinstance(key, (int, np.integer))
        if single:
            key = slice(key, key + 1)
        elif not isinstance(key, (slice, Tensor)):
            key = torch.as_tensor(key)
        key = key.cpu() if isinstance(key, Tensor) else key
        rows = self._rows[key]
        raw = self._pixels[rows] if self._pixels is not None else torch.from_numpy(read_rows(self.images.pixels,
                                                                                             rows.numpy()))
        x = self._normalised(raw)
        if self._offsets is not None:
            offsets = self._offsets[key]
            if bool((offsets != NO_SHIFT).any()):
                x = shift_images(x, self.max_shift, offsets)
        x = x.to(self.device)
        return x[0] if single else x

    def _normalised(self, raw: Tensor) -> Tensor:
        """Images.normalise in torch: the same float32 operations, so the same bits."""
        x = raw.to(torch.float32, copy=True, memory_format=torch.contiguous_format)
        if raw.dtype == torch.uint8:
            x /= float(self.images.scale)
        x -= self._mean
        x /= self._std
        return x

    def select(self, mask: Tensor) -> Streamed:
        """The rows where the boolean `mask` is true."""
        keep = mask.cpu().numpy()
        return Streamed(self.images, self.device, self.positions[keep], self.offsets[keep], self.max_shift)

    def with_copies(self, copies: int, max_shift: int, generator: torch.Generator) -> Streamed:
        """These rows followed by `copies` shifted copies of them: what torch.cat([x, *[jitter(x) ...]])
        gives, drawn from `generator` the same way."""
        assert not (self.offsets != NO_SHIFT).any(), "copies are made of unshifted rows"
        drawn = [draw_offsets(len(self), max_shift, generator).numpy() if max_shift else self.offsets
                 for _ in range(copies)]  # jitter(x, 0) is x itself, and draws nothing
        return Streamed(self.images, self.device, np.tile(self.positions, copies + 1),
                        np.concatenate([self.offsets, *drawn]), max_shift)

    def to(self, device) -> Streamed:
        return Streamed(self.images, device, self.positions, self.offsets, self.max_shift)

    def cpu(self) -> Streamed:
        return self.to("cpu")
