"""Memory and time of `edgekd run --until teacher` on an image folder of real size.

    python benchmarks/large_data.py --images 50000 --size 32 --work /tmp/large32
    python benchmarks/large_data.py --images 10000 --size 224 --work /tmp/large224 --set teacher.train.epochs=1

Makes the folder once (`WORK/data/train/<digit>/`, `WORK/data/test/<digit>/`, five train images to
one test image): mnist5k's digits padded, shifted, tinted per class and resized to SIZE px RGB JPEGs,
each one different. Then runs the command twice under `/usr/bin/time -v` with a fresh decoded-image
cache: the first run (decode, train the teacher) and a re-run with every stage fresh; prints each
one's wall time and peak resident memory. Extra `--set` overrides go to both runs.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_images(root: Path, n: int, size: int, seed: int = 0) -> None:
    """n JPEGs of size x size RGB under root/train and root/test, one folder per digit."""
    from PIL import Image

    from edgekd.pipeline.config import DataConfig
    from edgekd.pipeline.data.loaders import load_mnist5k

    raw = load_mnist5k(DataConfig(dataset="mnist5k"))
    rng = np.random.default_rng(seed)
    tints = rng.uniform(0.4, 1.0, (10, 3))
    for i in range(n):
        j = i % len(raw.y)
        digit = int(raw.y[j])
        img = np.pad(raw.x[j, 0], 4)
        dy, dx = rng.integers(-3, 4, 2)
        img = np.roll(img, (dy, dx), axis=(0, 1))
        rgb = (img[..., None] * tints[digit] * 255 + rng.uniform(0, 40, 3)).clip(0, 255).astype(np.uint8)
        split = "test" if i % 6 == 5 else "train"
        folder = root / split / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).resize((size, size), Image.BILINEAR).save(folder / f"{i:06d}.jpg", quality=90)


def measure(command: list[str], env: dict) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit code) of one command under /usr/bin/time -v."""
    proc = subprocess.run(["/usr/bin/time", "-v", *command], env=env, capture_output=True, text=True)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    if proc.returncode or not rss or not wall:
        print(proc.stderr[-3000:], file=sys.stderr)
    hours, minutes, seconds = (float(g or 0) for g in wall.groups()) if wall else (0, 0, 0)
    return hours * 3600 + minutes * 60 + seconds, int(rss.group(1)) / 1024 if rss else float("nan"), proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    data = args.work / "data"
    if not (data / "train").is_dir():
        print(f"making {args.images} {args.size} px JPEGs in {data} ...", flush=True)
        make_images(data, args.images, args.size)
    cache, out = args.work / "cache", args.work / "run"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "EDGEKD_CACHE_DIR": str(cache)}
    command = [str(Path(sys.executable).with_name("edgekd")), "run", str(ROOT / "configs" / "mnist5k.toml"), "--out",
               str(out), "--until", "teacher", "--set", "data.dataset=folder", "--set", f"data.path={data}",
               *[a for o in args.overrides for a in ("--set", o)]]
    for label in ("first run", "no-op re-run"):
        wall, rss, code = measure(command, env)
        print(f"{label}: {wall:.1f} s, peak RSS {rss:.0f} MB, exit {code}", flush=True)


if __name__ == "__main__":
    main()
