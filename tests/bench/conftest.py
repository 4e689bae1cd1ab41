from pathlib import Path

import pytest

from edgekd.pipeline.config import load_config
from edgekd.pipeline.run import run_pipeline
from tests.helpers import SEED

ROOT = Path(__file__).resolve().parents[2]
FAST_BENCH = ["teacher.train.epochs=3", "student.train.epochs=3", "run.device=cpu", f"run.seed={SEED}",
              "export.models=['student']", "export.formats=['onnx', 'tflite_int8']", "bench.processes=2",
              "bench.min_runs=20", "bench.min_seconds=0.02", "bench.warmup=2", "bench.eager=['student']"]


@pytest.fixture(scope="session")
def bench_run(tmp_path_factory):
    """digits through export, bench and report: one ONNX and one int8 TFLite student, tiny timing budget."""
    run_dir = tmp_path_factory.mktemp("bench") / "digits"
    run_pipeline(load_config(ROOT / "configs" / "digits.toml", FAST_BENCH), run_dir)
    return run_dir
