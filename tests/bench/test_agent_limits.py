"""What the agent refuses before it reads or loads: bundles whose members are not what bundle.json
says (size, name, duplicates, a file that is also a folder), anything over the `--max-bytes` ceiling,
and eval sets that are not numbers. Each refusal is exit 2 with a message naming the problem, never a
traceback; a well-formed bundle in either bundle.json form is measured."""
import hashlib
import io
import json
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.bench.test_agent import AGENT, _dense_tflite

QUICK = ["--processes", "1", "--min-runs", "5", "--min-seconds", "0", "--warmup", "1"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 64 -> 10 dense model (2,560 weight bytes) and a 40-sample eval set of 1x8x8 images for it."""
    root = tmp_path_factory.mktemp("limits")
    _dense_tflite(root / "m.tflite", 64, 10)
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, x=rng.standard_normal((40, 1, 8, 8)).astype(np.float32), y=rng.integers(0, 10, 40))
    return {"export/m.tflite": (root / "m.tflite").read_bytes(), "data/eval.npz": buf.getvalue()}


def _bundle(path: Path, members: list[tuple[str, bytes]], listing: dict | str | None = None, sized: bool = True) -> Path:
    """A zip with `members` and a bundle.json listing them (name -> {sha256, size}, or name -> sha256)."""
    if listing is None:
        listing = {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} if sized
                   else hashlib.sha256(data).hexdigest() for name, data in members}
    text = listing if isinstance(listing, str) else json.dumps({"schema": "edgekd.bundle/1", "files": listing})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
        archive.writestr("bundle.json", text)
    return path


def _run(*args, timeout=120):
    proc = subprocess.run([*AGENT, *map(str, args), *QUICK], capture_output=True, text=True,
                          timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.mark.parametrize("sized", [True, False], ids=["name->{sha256,size}", "name->sha256 (older packs)"])
def test_a_bundle_in_either_listing_form_is_measured(files, tmp_path, sized):
    bundle = _bundle(tmp_path / "b.zip", list(files.items()), sized=sized)
    proc = _run(bundle, "-o", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads((tmp_path / "r.json").read_text())["results"]
    assert row["artifact"] == "m.tflite" and row["n_eval"] == 40 and len(row["correct_bits"]) == 10  # 5 bytes, hex


def test_a_member_larger_than_declared_is_refused_before_it_is_read(files, tmp_path):
    members = list(files.items())
    listing = {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for name, data in members}
    listing["export/m.tflite"]["size"] = 1000  # the zip's header says the real size (2,924 bytes)
    proc = _run(_bundle(tmp_path / "b.zip", members, listing))
    assert proc.returncode == 2
    size = len(files["export/m.tflite"])
    assert f"export/m.tflite: {size:,} bytes in the zip but 1,000 in bundle.json" in proc.stderr
    assert "altered" not in proc.stderr  # refused from the zip's directory: its bytes were never hashed


def test_the_ceiling_bounds_each_file_and_the_whole_bundle(files, tmp_path):
    bundle = _bundle(tmp_path / "b.zip", list(files.items()))
    model, data = len(files["export/m.tflite"]), len(files["data/eval.npz"])
    each = _run(bundle, "--max-bytes", model - 1)
    assert each.returncode == 2 and "export/m.tflite:" in each.stderr and "over the agent's ceiling" in each.stderr
    total = _run(bundle, "--max-bytes", max(model, data) + 1)  # each file fits, both together do not
    assert total.returncode == 2 and f"the files take {(model + data) / 2 ** 20:.1f} MiB ({model + data:,} bytes)" in total.stderr
    assert _run(bundle, "--max-bytes", model + data, "-o", tmp_path / "r.json").returncode == 0
    alone = _run(_extract(files, tmp_path), "--max-bytes", "1K")  # a model file alone, outside a bundle
    assert alone.returncode == 2 and "over the agent's ceiling of 0.0 MiB (1,024 bytes)" in alone.stderr


def _extract(files, tmp_path) -> Path:
    (tmp_path / "m.tflite").write_bytes(files["export/m.tflite"])
    return tmp_path / "m.tflite"


def test_duplicate_names_are_refused(files, tmp_path):
    members = list(files.items())
    with pytest.warns(UserWarning, match="Duplicate name"):  # zipfile itself warns, and writes both
        bundle = _bundle(tmp_path / "b.zip", members + [("export/m.tflite", b"another model")])
    proc = _run(bundle)
    assert proc.returncode == 2 and "export/m.tflite: appears 2 times in the zip" in proc.stderr
    twice = '{"schema": "edgekd.bundle/1", "files": {"export/m.tflite": "%s", "export/m.tflite": "%s"}}' % (
        "0" * 64, hashlib.sha256(files["export/m.tflite"]).hexdigest())
    proc = _run(_bundle(tmp_path / "c.zip", members, twice))
    assert proc.returncode == 2 and "export/m.tflite listed twice" in proc.stderr


def test_a_file_that_is_also_a_folder_is_refused_cleanly(files, tmp_path):
    members = list(files.items()) + [("export", b"a file named like the folder")]
    proc = _run(_bundle(tmp_path / "b.zip", members))
    assert proc.returncode == 2 and "export: both a file and the folder of export/m.tflite" in proc.stderr


def _zeros_npz(path: Path, samples: int) -> int:
    """An eval.npz of `samples` 1x8x8 float32 zeros, written in slices (never all in memory); its data bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (samples, 1, 8, 8)})
    nbytes, chunk = samples * 256, bytes(1 << 24)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as npz:
        with npz.open("x.npy", "w", force_zip64=True) as fh:
            fh.write(header.getvalue())
            for start in range(0, nbytes, len(chunk)):
                fh.write(chunk[:min(len(chunk), nbytes - start)])
        with npz.open("y.npy", "w", force_zip64=True) as fh:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": "<i8", "fortran_order": False, "shape": (samples,)})
            fh.write(header.getvalue())
            for start in range(0, samples * 8, len(chunk)):
                fh.write(chunk[:min(len(chunk), samples * 8 - start)])
    return nbytes + samples * 8


def test_a_gigabyte_of_zeros_as_eval_set_is_refused_before_it_is_loaded(files, tmp_path):
    """1 GiB of zeros compresses to about 1 MB: the bundle passes its size checks, the eval set's own
    headers do not (4,194,304 samples: 'accuracy 1.0' once came out of it with exit 0)."""
    npz = tmp_path / "eval.npz"
    data_bytes = _zeros_npz(npz, 4 * 1024 * 1024)
    assert data_bytes > 2 ** 30 and npz.stat().st_size < 8 * 2 ** 20
    bundle = _bundle(tmp_path / "b.zip", [("export/m.tflite", files["export/m.tflite"]), ("data/eval.npz", npz.read_bytes())])
    began = time.monotonic()
    proc = _run(bundle)
    assert proc.returncode == 2 and time.monotonic() - began < 30
    assert f"eval.npz: its arrays take 1056.0 MiB ({data_bytes:,} bytes) decompressed, over the agent's ceiling of " \
           "512.0 MiB" in proc.stderr


@pytest.mark.parametrize("x, y, needle", [
    (np.array([[[["1"]]]]), np.array([0]), "got x of dtype <U1 and y of dtype int64"),
    (np.zeros((1, 1, 8, 8), np.float32), np.array(["cat"]), "got x of dtype float32 and y of dtype <U3"),
    (np.zeros((2, 64), np.float32), np.array([0, 1]), "expected x of shape (N, C, H, W) and y of shape (N,); got (2, 64)"),
    (np.zeros((3, 1, 8, 8), np.float32), np.array([0, 1]), "got (3, 1, 8, 8) and (2,)"),
], ids=["string x", "string y", "flat x", "lengths differ"])
def test_an_eval_set_that_is_not_numbers_of_the_right_shape_exits_2(files, tmp_path, x, y, needle):
    np.savez(tmp_path / "e.npz", x=x, y=y)
    proc = _run(_extract(files, tmp_path), "--eval", tmp_path / "e.npz")
    assert proc.returncode == 2 and needle in proc.stderr
    if "x of dtype" in needle:
        assert "x must hold numbers and y integer class labels" in proc.stderr


def test_an_eval_set_of_another_input_size_exits_2(files, tmp_path):
    np.savez(tmp_path / "e.npz", x=np.zeros((2, 1, 7, 7), np.float32), y=np.array([0, 1]))
    proc = _run(_extract(files, tmp_path), "--eval", tmp_path / "e.npz")
    assert proc.returncode == 2 and "takes inputs of shape [1, 64], but" in proc.stderr and "[1, 7, 7]" in proc.stderr
