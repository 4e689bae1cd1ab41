"""Several targets at once: a bounded pool, a time limit and one retry per target, and targets that
time on this machine's CPU (local, command, ssh to this host) never at the same time as each other,
because concurrent timing on one CPU corrupts both. A target that fails, in any way, gets an outcome
saying why and never stops the others.

A target's `timeout_s` is the limit for its whole measurement: it starts when the target's turn
begins (not while it waits for this machine's CPU) and covers preparing, every process and call,
and the retry, which is made only while time is left."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgekd.bench.agent.jobs import Job
from edgekd.bench.agent.limits import Deadline
from edgekd.errors import AgentError


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
        target.deadline = Deadline(getattr(getattr(target, "options", None), "timeout_s", None))
        for attempt in (1, 2):
            outcome.attempts = attempt
            try:
                outcome.document = _measure_once(target, files, eval_path, extra_jobs, progress)
                outcome.status, outcome.error = "ok", ""
                break
            except AgentError as exc:
                outcome.status, outcome.error = ("missing" if exc.exit_code == 3 else "failed"), _named(target, exc)
                if exc.exit_code == 3 or target.deadline.passed():
                    break  # a missing runtime or device does not appear on a second try; no time is left
            except OSError as exc:  # the transport itself (ssh, adb, a prefix) could not be started
                outcome.status, outcome.error = "missing", _named(target, exc)
                break
            except Exception as exc:  # anything else (a malformed answer, a bug) is this target's failure alone
                outcome.status, outcome.error = "failed", _named(target, f"{type(exc).__name__}: {exc}")
                break  # not a transient failure: a second try would fail the same way
        outcome.ended_at = time.time()
    return outcome


def _named(target, error) -> str:
    """The error, starting with `target NAME:` so that a line of several targets' errors says whose."""
    text = str(error)
    return text if text.startswith(f"target {target.name}:") else f"target {target.name}: {text}"


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
