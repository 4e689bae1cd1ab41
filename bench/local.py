"""The local target: this machine. The agent's workers run as local processes, beside the host's
PyTorch eager jobs (`extra_jobs`), which only this kind runs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from edgekd.bench.agent.jobs import Job, model_job, run_jobs, skipped_rows
from edgekd.bench.agent.limits import Deadline
from edgekd.bench.kinds import Kind
from edgekd.bench.targets import BenchOptions, merge_documents


@dataclass(frozen=True)
class LocalTargetConfig:
    kind: Literal["local"] = "local"
    threads: tuple[int, ...] = ()  # () takes bench.threads
    processes: int = 0  # 0 takes bench.processes
    timeout_s: float = 3600.0


class LocalTarget:
    kind = "local"
    shares_cpu = True

    def __init__(self, name: str = "local", options: BenchOptions = BenchOptions()):
        self.name, self.options = name, options
        self.deadline = Deadline(options.timeout_s)

    def prepare(self) -> None:
        pass

    def run(self, files: list[Path], eval_path: Path, extra_jobs: list[Job] = (),
            progress: Callable[[str], None] | None = None) -> dict:
        o, documents = self.options, []
        for threads in o.threads:
            jobs = [model_job(f, eval_path, threads, o.timing) for f in files]
            jobs += [job for job in extra_jobs if threads == o.threads[0]]  # eager rows: once, at the first count
            documents.append({"results": run_jobs(jobs, o.processes, self.name, progress, deadline=self.deadline,
                                                  profile=o.profile),
                              "skipped": skipped_rows(jobs)})
        return merge_documents(self.name, documents)

    def cleanup(self) -> None:
        pass


def _build(name: str, config: LocalTargetConfig, options: BenchOptions) -> LocalTarget:
    return LocalTarget(name, options)


KIND = Kind(LocalTargetConfig, _build)
