"""The decoded-image cache of folder datasets: built once and then read without decoding, a new entry
when a file changes, nothing half-written after a failed decode, and the same dataset either way."""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekd.errors import DataError
from edgekd.pipeline.config import DataConfig
from edgekd.pipeline.data import prepare


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "images"


def _rgb_folder(root, n=12):
    rng = np.random.default_rng(0)
    for c in ("ant", "bee"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (5, 4, 3), np.uint8)).save(root / c / f"{i}.png")


def _entries(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_second_load_reads_the_cache_without_decoding(tmp_path, cache):
    _rgb_folder(tmp_path / "imgs")
    cfg = DataConfig(dataset="folder", path=str(tmp_path / "imgs"))
    first = prepare(cfg, seed=0)
    assert [Path(p).suffix for p in _entries(cache)] == [".json", ".npy"]
    # the same dataset as a decode into memory
    assert prepare(DataConfig(dataset="folder", path=str(tmp_path / "imgs"), cache=False), seed=0).fingerprint() \
        == first.fingerprint()
    # overwrite an image with bytes no decoder reads, keeping its size and mtime: only a read of the
    # cache (no decode) can still succeed, with the pixels decoded the first time
    victim = tmp_path / "imgs" / "bee" / "3.png"
    st = victim.stat()
    victim.write_bytes(b"\0" * st.st_size)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = prepare(cfg, seed=0)
    assert again.fingerprint() == first.fingerprint() and len(_entries(cache)) == 2
    assert again.x_train.dtype == np.float32 and again.in_shape == (3, 5, 4)


def test_a_changed_file_makes_a_new_entry(tmp_path, cache):
    _rgb_folder(tmp_path / "imgs")
    cfg = DataConfig(dataset="folder", path=str(tmp_path / "imgs"))
    before = prepare(cfg, seed=0)
    Image.fromarray(np.full((5, 4, 3), 255, np.uint8)).save(tmp_path / "imgs" / "ant" / "0.png")
    os.utime(tmp_path / "imgs" / "ant" / "0.png", ns=(1, 10 ** 18))  # a new mtime, whatever the clock's resolution
    after = prepare(cfg, seed=0)
    assert len(_entries(cache)) == 4 and after.fingerprint() != before.fingerprint()


def test_a_failed_decode_leaves_no_entry(tmp_path, cache):
    _rgb_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "bee" / "5.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="5.png: unreadable image"):
        prepare(DataConfig(dataset="folder", path=str(tmp_path / "imgs")), seed=0)
    assert _entries(cache) == []


def test_cache_off_writes_nothing_and_statistics_match_the_pixels(tmp_path, cache):
    _rgb_folder(tmp_path / "imgs")
    ds = prepare(DataConfig(dataset="folder", path=str(tmp_path / "imgs"), cache=False, val_fraction=0,
                            test_fraction=0.25), seed=0)
    assert _entries(cache) == []
    pixels = np.stack([np.asarray(Image.open(p)) for c in ("ant", "bee") for p in sorted((tmp_path / "imgs" / c).glob("*.png"))])
    train = (np.asarray(ds.x_train) * ds.std[None, :, None, None] + ds.mean[None, :, None, None]) * 255
    assert np.allclose(np.round(train), train, atol=1e-3)  # whole pixel values back
    assert ds.mean == pytest.approx(np.round(train).mean(axis=(0, 2, 3)) / 255, abs=1e-6)
    assert pixels.shape == (24, 5, 4, 3) and len(ds.y_train) == 18
