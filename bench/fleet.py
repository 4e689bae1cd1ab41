"""Several targets at once: a bounded pool, a time limit and one retry per target, and targets that
time on this machine's CPU (local, command, ssh to this host) never at the same time as each other,
because concurrent timing on one CPU corrupts both. A target that fails gets an outcome saying why
and never stops the others."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgekd.bench.agent import AgentError, Job


@dataclass
class Outcome:
    target: str
    kind: str
    status: str = "ok"  # ok | failed | missing (the device lacks something: exit 3)
    error: str = ""
    attempts: int = 0
    started_at: float = 0.0
    ended_at: float = 0.0
    document: dict = field(default_factory=dict)


def _measure_once(target, files: list[Path], eval_path: Path, extra_jobs: list[Job], progress) -> dict:
    try:
        target.prepare()
        return target.run(files, eval_path, extra_jobs, progress)
    finally:
        target.cleanup()


def measure_target(target, files: list[Path], eval_path: Path, extra_jobs: list[Job], cpu: threading.Lock,
                   progress: Callable[[str], None] | None = None) -> Outcome:
    outcome = Outcome(target.name, target.kind)
    with cpu if target.shares_cpu else _NoLock():
        outcome.started_at = time.time()
        for attempt in (1, 2):
            outcome.attempts = attempt
            try:
                outcome.document = _measure_once(target, files, eval_path, extra_jobs, progress)
                outcome.status, outcome.error = "ok", ""
                break
            except AgentError as exc:
                outcome.status, outcome.error = ("missing" if exc.exit_code == 3 else "failed"), str(exc)
                if exc.exit_code == 3:
                    break  # a missing runtime or device does not appear on a second try
            except OSError as exc:  # the transport itself (ssh, adb, a prefix) could not be started
                outcome.status, outcome.error = "missing", f"target {target.name}: {exc}"
                break
        outcome.ended_at = time.time()
    return outcome


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def measure_fleet(targets: list, files: list[Path], eval_path: Path, extra_jobs: dict[str, list[Job]] | None = None,
                  max_parallel: int = 4, progress: Callable[[str], None] | None = None) -> list[Outcome]:
    """Measure `files` on every target, concurrently where they do not share this machine's CPU."""
    cpu = threading.Lock()
    extra_jobs = extra_jobs or {}
    with ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool:
        futures = [pool.submit(measure_target, t, files, eval_path, extra_jobs.get(t.name, []), cpu, progress)
                   for t in targets]
        try:
            return [f.result() for f in futures]
        except KeyboardInterrupt:
            for t in targets:  # stop what runs now and remove what it copied; then let Ctrl-C through
                t.cleanup()
            raise
