"""Splits read batch by batch (pipeline.data.images, pipeline.training.batches): every batch equals the
same rows of the whole split normalised at once, a split read from a cache file leaves resident memory
flat, the streamed transfer set equals the in-memory one, and a streamed run trains the same weights."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.fileio import sha256_file, write_npz
from edgekd.pipeline.config import load_config
from edgekd.pipeline.data.images import Images, channel_stats, streams
from edgekd.pipeline.run import run_pipeline
from edgekd.pipeline.training.batches import Streamed
from edgekd.pipeline.training.fit import jitter
from tests.helpers import SEED

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = np.array([0.4, 0.5, 0.6], np.float32), np.array([0.2, 0.3, 0.25], np.float32)


def _pixels(n=300, shape=(3, 9, 7)):
    return np.random.default_rng(0).integers(0, 256, (n, *shape)).astype(np.uint8)


def _whole(pixels, rows):
    """The split normalised at once, as prepare() did before splits were streamed."""
    out = pixels[rows].astype(np.float32)
    out /= np.float32(255.0)
    out -= MEAN[None, :, None, None]
    out /= STD[None, :, None, None]
    return out


@pytest.fixture
def mapped(tmp_path):
    pixels = _pixels()
    np.save(tmp_path / "p.npy", pixels)
    return pixels, np.load(tmp_path / "p.npy", mmap_mode="r")


def test_any_batch_equals_the_whole_split_normalised(mapped):
    pixels, on_disk = mapped
    rows = np.random.default_rng(1).permutation(300)[:200]
    whole = _whole(pixels, rows)
    for source in (pixels, on_disk):
        images = Images(source, rows, MEAN, STD)
        assert images.shape == (200, 3, 9, 7) and images.nbytes == whole.nbytes
        for key in (slice(10, 50), np.array([199, 3, 3, 0, 150]), 7):
            np.testing.assert_array_equal(images[key], whole[key])  # bit for bit
        np.testing.assert_array_equal(np.concatenate(list(images.chunks(4 * 189 * 16))), whole)
        np.testing.assert_array_equal(np.asarray(images), whole)


def test_chunked_statistics_and_eval_file_equal_the_whole_arrays(mapped, tmp_path):
    pixels, on_disk = mapped
    rows = np.arange(0, 300, 2)
    mean, std = channel_stats(on_disk, rows, chunk_bytes=8 * 189 * 7)  # chunks of 7 images
    x = pixels[rows].astype(np.float64) / 255
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3)), rtol=1e-5)
    write_npz(tmp_path / "chunked.npz", compress=True, x=Images(on_disk, rows, MEAN, STD))
    write_npz(tmp_path / "whole.npz", compress=True, x=_whole(pixels, rows))
    assert sha256_file(tmp_path / "chunked.npz") == sha256_file(tmp_path / "whole.npz")


def _rss_mb() -> float:
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("needs /proc/self/status (Linux) to read resident memory")
    kb = next(line for line in status.read_text().splitlines() if line.startswith("VmRSS:")).split()[1]
    return int(kb) / 1024


def test_reading_a_cached_split_keeps_resident_memory_flat(tmp_path):
    n, shape = 1600, (3, 128, 128)  # 75 MiB of uint8 pixels on disk
    x = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.uint8, shape=(n, *shape))
    x[:] = 7
    x.flush()
    del x
    on_disk = np.load(tmp_path / "big.npy", mmap_mode="r")
    images = Images(on_disk, np.arange(n), MEAN, STD)
    order = np.random.default_rng(0).permutation(n)
    before = _rss_mb()
    for i in range(0, n, 64):  # one epoch of batches, as fit reads them
        images[order[i:i + 64]]
    grown = _rss_mb() - before
    assert grown < 30, f"resident memory grew {grown:.0f} MB over an epoch of a 75 MiB split"
    # what it guards against: indexing the memory map itself keeps every page it touched resident
    for i in range(0, n, 64):
        np.asarray(on_disk[np.sort(order[i:i + 64])]).sum()
    assert _rss_mb() - before > 50


def test_streamed_transfer_set_equals_the_in_memory_one():
    pixels = _pixels(120)
    images = Images(pixels, np.arange(10, 110), MEAN, STD)
    streamed, whole = Streamed(images, torch.device("cpu")), torch.from_numpy(_whole(pixels, np.arange(10, 110)))
    mask = torch.arange(100) % 3 != 0
    streamed, whole = streamed.select(mask), whole[mask]
    copies = streamed.with_copies(2, 2, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    expected = torch.cat([whole, *[jitter(whole, 2, gen) for _ in range(2)]])
    assert len(copies) == len(expected) == 3 * int(mask.sum())
    idx = torch.randperm(len(expected), generator=torch.Generator().manual_seed(0))[:64]
    assert torch.equal(copies[idx], expected[idx]) and torch.equal(copies[5:40], expected[5:40])
    assert not torch.equal(copies[len(whole):], expected[:len(whole)].repeat(2, 1, 1, 1))  # the copies are shifted
    assert torch.equal(streamed.with_copies(1, 0, gen)[:], whole.repeat(2, 1, 1, 1))


def test_auto_streams_only_large_splits():
    assert not streams("auto", 100 << 20) and streams("auto", 600 << 20)
    assert streams(True, 1) and not streams(False, 10 << 30)


def test_a_streamed_run_trains_the_same_weights(tmp_path):
    """Teacher with jitter, transfer set with a class omitted and a jittered copy: every checkpoint and
    the eval set are the same bytes whether the splits are held or streamed."""
    overrides = ["teacher.train.epochs=2", "student.train.epochs=2", "distill.transfer_copies=1",
                 "distill.transfer_jitter=1", "distill.transfer.omit_classes=[3]", "run.device=cpu",
                 f"run.seed={SEED}"]
    digests = []
    for stream in ("true", "false"):
        cfg = load_config(ROOT / "configs" / "digits.toml", [*overrides, f"data.stream={stream}"])
        run_pipeline(cfg, tmp_path / stream, until="student")
        digests.append({name: hashlib.sha256((tmp_path / stream / name).read_bytes()).hexdigest()
                        for name in ("teacher.pt", "baseline.pt", "student.pt", "data/eval.npz")})
    assert digests[0] == digests[1]
