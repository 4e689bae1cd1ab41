import pytest

from edgekd.pipeline.config import load_config
from edgekd.pipeline.run import run_pipeline
from tests.helpers import FAST_BENCH, ROOT


@pytest.fixture(scope="session")
def bench_run(tmp_path_factory):
    """A finished run of digits through export, bench and report (see helpers.FAST_BENCH)."""
    run_dir = tmp_path_factory.mktemp("bench") / "digits"
    run_pipeline(load_config(ROOT / "configs" / "digits.toml", FAST_BENCH), run_dir)
    return run_dir
