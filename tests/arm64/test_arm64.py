"""Proof on ARM64: a real run's files benchmarked inside an emulated Debian bookworm arm64 root (what
Raspberry Pi OS 64-bit is built on) through the command target, with ai-edge-litert + onnxruntime and
with Debian's numpy 1.24 + tflite-runtime 2.14, and a bundle from `edgekd pack` measured there by the
one file it carries (agent.pyz), as a user does on a device; and the ExecuTorch files with ExecuTorch's
aarch64 wheel installed without torch, through the agent's torch-free runner, which the agent builds
there with the root's g++ on first use (PyPI's aarch64 torch is a CUDA build; a Pi has no use for it).
Timings under emulation mean nothing; whether every file loads, runs and scores what it scores on x86
is the point.

qemu runs as a Cortex-A72 (a Raspberry Pi 4): its default `-cpu max` also emulates extensions no Pi
has (SVE2, SME), XNNPACK picks int8 kernels for them, and their outputs differed from x86's.

    make test-arm64        # builds the root once (about 5 minutes; cached in .cache/arm64-root), then this
"""
import json
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import pytest

from edgekd.pipeline.cli import main
from edgekd.pipeline.config import load_config
from edgekd.pipeline.run import run_pipeline
from tests.helpers import ROOT, SEED

pytestmark = pytest.mark.arm64
ARM_ROOT = Path(os.environ.get("EDGEKD_ARM64_ROOT", ROOT / ".cache" / "arm64-root"))
TOLERANCE = {"fp32": 0.002, "fp16": 0.002, "int8": 0.005}  # accuracy may differ from x86 by this fraction at most
ENVS = {"litert": {"ai_edge_litert", "onnxruntime"}, "tflrt": {"tflite_runtime"}, "executorch": {"executorch"}}
RUNS = {"litert": (".tflite", ".onnx"), "tflrt": (".tflite",), "executorch": (".pte",)}  # the files each env runs
PIP = {".onnx": "pip install onnxruntime", ".pte": "pip install executorch", ".tflite": "pip install ai-edge-litert"}


CACHE_INSIDE = "/tmp/edgekd-cache"  # the agent's cache in the root (its torch-free ExecuTorch runner)


def _prefix(arm_root: Path, env: str) -> list[str]:
    return ["env", "QEMU_CPU=cortex-a72", f"XDG_CACHE_HOME={CACHE_INSIDE}", "chroot", str(arm_root),
            f"/opt/{env}/bin/python"]


@pytest.fixture(scope="module")
def arm_root():
    if not all((ARM_ROOT / "opt" / env / "bin" / "python").exists() for env in ("litert", "tflrt")):
        pytest.fail(f"no arm64 root at {ARM_ROOT}; build it with tests/arm64/make_root.sh {ARM_ROOT} (make test-arm64 does)")
    proc = ARM_ROOT / "proc"
    mounted = subprocess.run(["mountpoint", "-q", str(proc)]).returncode == 0
    if not mounted:  # onnxruntime refuses to load models without /proc; /sys stays out (LiteRT's CPU probe crashes)
        subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
    yield ARM_ROOT
    if not mounted:
        subprocess.run(["umount", "--lazy", str(proc)], check=False)  # lazy: a lingering emulated process must not keep it


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real run: digits, teacher and student, every default format, measured locally (x86) first."""
    out = tmp_path_factory.mktemp("arm64") / "digits"
    settings = ["teacher.train.epochs=5", "student.train.epochs=10", "run.device=cpu", f"run.seed={SEED}",
                "bench.processes=2", "bench.min_runs=10", "bench.min_seconds=0.0", "bench.warmup=2", "bench.eager=[]"]
    run_pipeline(load_config(ROOT / "configs" / "digits.toml", settings), out)
    return out


def _bench(arm_root: Path, run_dir: Path, targets: Path, envs: list[str]) -> dict:
    """`edgekd bench` on this machine and on the emulated root through each env's Python; the report."""
    targets.write_text("".join(
        f'[targets.arm64-{env}]\nkind = "command"\nprefix = {json.dumps(_prefix(arm_root, env))}\n'
        f'stage_dir = "{arm_root}/tmp"\nstage_dir_inside = "/tmp"\ntimeout_s = 3600\n\n' for env in envs))
    assert main(["bench", str(run_dir), "--targets", str(targets), "--target", "local",
                 *[a for env in envs for a in ("--target", f"arm64-{env}")]]) == 0
    return json.loads((run_dir / "report.json").read_text())


@pytest.mark.parametrize("envs", [["litert", "tflrt"], ["executorch"]], ids=["litert+tflrt", "executorch"])
def test_every_file_runs_on_aarch64_and_scores_what_it_scores_on_x86(arm_root, run_dir, tmp_path, envs):
    if not (arm_root / "opt" / envs[0] / "bin" / "python").exists():
        pytest.skip(f"no /opt/{envs[0]} in the arm64 root, which an older make_root.sh built: run "
                    f"tests/arm64/make_root.sh {arm_root} again (it adds what is missing)")
    runner_cache = arm_root / CACHE_INSIDE.lstrip("/") / "edgekd" / "pte-runner"
    shutil.rmtree(runner_cache, ignore_errors=True)  # the agent builds it anew
    report = _bench(arm_root, run_dir, tmp_path / "targets.toml", envs)
    assert ("executorch" in envs) == bool(list(runner_cache.glob("*/libedgekd_pte.so")))
    precision = {a["file"]: a["precision"] for a in report["artifacts"]}
    x86 = {r["artifact"]: r for r in report["results"] if r["target"] == "local" and r["artifact"] in precision}
    assert len(x86) == 14
    for env in envs:
        runtimes = ENVS[env]
        rows = {r["artifact"]: r for r in report["results"] if r["target"] == f"arm64-{env}"}
        expected = {a for a in x86 if a.endswith(RUNS[env])}
        assert set(rows) == expected, (env, set(expected) - set(rows))
        for name, row in rows.items():
            assert row["device"]["machine"] == "aarch64" and row["runtime"] in runtimes, row["runtime"]
            gap = abs(row["accuracy"] - x86[name]["accuracy"])
            assert gap <= TOLERANCE[precision[name]] + 1e-12, (env, name, row["accuracy"], x86[name]["accuracy"])
            print(f"{env:6s} {name:32s} {row['runtime']} {row['runtime_version']}: accuracy {row['accuracy']:.4f} "
                  f"(x86 {x86[name]['accuracy']:.4f})")
        skipped = [s for s in report["skipped"] if s["target"] == f"arm64-{env}"]
        assert {s["artifact"] for s in skipped} == set(x86) - expected
        assert all(PIP[Path(s["artifact"]).suffix] in s["reason"] for s in skipped), skipped


def test_a_packed_bundle_runs_on_aarch64_by_its_own_agent_pyz(arm_root, run_dir):
    """On the "device" only the bundle: its agent.pyz unzipped beside it and run by the device's Python."""
    device = Path(tempfile.mkdtemp(prefix="edgekd-pyz-", dir=arm_root / "tmp"))
    inside = Path("/tmp") / device.name
    try:
        assert main(["pack", str(run_dir), "-o", str(device / "bundle.zip")]) == 0
        zipfile.ZipFile(device / "bundle.zip").extract("agent.pyz", device)
        proc = subprocess.run([*_prefix(arm_root, "litert"), f"{inside}/agent.pyz",
                               f"{inside}/bundle.zip", "--target", "pi", "--processes", "1", "--min-runs", "5",
                               "--min-seconds", "0", "--warmup", "1", "-o", f"{inside}/results.json"],
                              capture_output=True, text=True, timeout=3600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = json.loads((device / "results.json").read_text())["results"]
    finally:
        shutil.rmtree(device, ignore_errors=True)
    report = json.loads((run_dir / "report.json").read_text())
    precision = {a["file"]: a["precision"] for a in report["artifacts"]}
    x86 = {r["artifact"]: r for r in report["results"] if r["target"] == "local" and r["artifact"] in precision}
    assert {r["artifact"] for r in rows} == {a for a in x86 if a.endswith(RUNS["litert"])} and len(rows) == 10
    for row in rows:
        assert row["device"]["machine"] == "aarch64" and row["target"] == "pi"
        assert abs(row["accuracy"] - x86[row["artifact"]]["accuracy"]) <= TOLERANCE[precision[row["artifact"]]] + 1e-12
