"""The default job on real MNIST digits, as `make demo` runs it (about 2 minutes): `make test-slow`."""
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.run import run_pipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_mnist5k_default_job_reaches_its_numbers(tmp_path):
    summary = run_pipeline(load_config(ROOT / "configs" / "mnist5k.toml", ["run.device=cpu"]), tmp_path / "r",
                           until="export")
    m = summary.metrics
    assert m["teacher"]["accuracy"] >= 0.975, m["teacher"]
    assert m["teacher"]["macs"] >= 10 * m["student"]["macs"]
    # seed 0 measured 97.00 % -> 98.10 %; over seeds 0-2 the mean gain is +0.73 points
    assert m["student"]["accuracy"] - m["baseline"]["accuracy"] >= 0.005, (m["baseline"], m["student"])
    arts = {a["file"]: a for a in summary.artifacts}
    int8, fp32 = arts["export/student.int8.tflite"], arts["export/student.tflite"]
    assert int8["size_bytes"] <= 0.30 * fp32["size_bytes"]
    assert fp32["parity"]["accuracy"] - int8["parity"]["accuracy"] <= 0.01
