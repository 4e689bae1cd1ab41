"""Where benchmarks run. A target measures model files with the agent and returns result records
(schema edgekd.result/1); `TARGET_KINDS` is the registry of kinds.

    target.prepare()                      # check the device answers and has a runtime; copy what it needs
    results = target.run(files, eval_path)
    target.cleanup()                      # always, also after a failure

Torch-free and pipeline-free like the agent: the host builds the jobs it wants beside the files
(the PyTorch eager rows) and hands them in as `extra_jobs`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from edgekd.bench.agent import Job, Timing, model_job, run_jobs


@dataclass(frozen=True)
class BenchOptions:
    threads: int = 1
    processes: int = 5
    timing: Timing = field(default_factory=Timing)
    timeout_s: float | None = None  # per worker process


class Target(Protocol):
    name: str
    kind: str

    def prepare(self) -> None: ...

    def run(self, files: list[Path], eval_path: Path, extra_jobs: list[Job] = (),
            progress: Callable[[str], None] | None = None) -> list[dict]: ...

    def cleanup(self) -> None: ...


class LocalTarget:
    """This machine: the agent's workers run as local processes."""

    kind = "local"

    def __init__(self, name: str = "local", options: BenchOptions = BenchOptions()):
        self.name, self.options = name, options

    def prepare(self) -> None:
        pass

    def run(self, files: list[Path], eval_path: Path, extra_jobs: list[Job] = (),
            progress: Callable[[str], None] | None = None) -> list[dict]:
        o = self.options
        jobs = [model_job(f, eval_path, o.threads, o.timing) for f in files] + list(extra_jobs)
        return run_jobs(jobs, o.processes, self.name, progress, o.timeout_s)

    def cleanup(self) -> None:
        pass


TARGET_KINDS: dict[str, type] = {
    "local": LocalTarget,
}
