"""The scheduler: every model of a run measured in K rounds of fresh worker processes, round-robin over
the models so that a slow spell of the machine spreads over all of them, and each job's worker
records merged into one result row (schema edgekd.result/1)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekd.bench.agent.device import device_fingerprint, thermal_summary
from edgekd.bench.agent.evalset import check_eval
from edgekd.bench.agent.limits import DEFAULT_MAX_BYTES, Deadline
from edgekd.bench.agent.processes import agent_command, run_process
from edgekd.bench.agent.stats import combine_latency, pool_samples, subsample
from edgekd.bench.agent.worker import Timing, read_sidecar
from edgekd.errors import AgentError

SCHEMA = "edgekd.result/1"
BENCH_SCHEMA = "edgekd.bench/1"


@dataclass
class Job:
    """One artifact to measure: the command that runs one worker process for it (the command gets
    `-o OUT`, and `--accuracy` in the first round)."""

    artifact: str
    command: list[str]
    workers: list[dict] = field(default_factory=list)
    skipped: str = ""  # why it could not be measured here (its runtime is not installed)
    profilable: bool = False  # the command is the agent's worker, which profiles with `--profile`
    profile: dict | None = None


def memory_fields(workers: list[dict]) -> dict:
    """A row's memory from its worker records: each process's peak and runtime baseline (VmHWM before
    the model), the row's peak (the largest), runtime (the median baseline) and model part (the largest
    peak - baseline of one process). Workers that read no baseline (an older worker protocol) leave
    the runtime and model parts None: a peak minus an unknown start is not the model's memory."""
    peaks = [w["peak_rss_mb"] for w in workers]
    baselines = [w.get("runtime_rss_mb") for w in workers]
    known = all(b is not None for b in baselines)
    # VmHWM never decreases and both readings are whole kB, so peak - baseline >= 0 exactly: no clamp
    model = max(p - b for p, b in zip(peaks, baselines)) if known else None
    return {"peak_rss_mb": max(peaks), "runtime_rss_mb": float(np.median(baselines)) if known else None,
            "model_rss_mb": model, "rss_increase_mb": model,  # rss_increase_mb: the old name, kept for old readers
            "process_peak_rss_mb": peaks, "process_runtime_rss_mb": baselines if known else None,
            "runtime_rss_from": workers[0].get("runtime_rss_from")}


def merge(job: Job, target: str) -> dict:
    """The result record (schema edgekd.result/1) of one job from its worker records."""
    first = job.workers[0]
    shas = {w["sha256"] for w in job.workers}
    if len(shas) != 1:
        raise AgentError(f"{job.artifact}: the file changed while it was measured (sha256 {', '.join(sorted(shas))})")
    process_samples = [w["samples_ms"] for w in job.workers]
    scored = {k: first[k] for k in ("accuracy", "n_eval", "correct_bits") if k in first}
    return {
        "schema": SCHEMA, "artifact": job.artifact, "target": target, "sha256": first["sha256"],
        "runtime": first["runtime"], "runtime_version": first["runtime_version"], "threads": first["threads"],
        "device": device_fingerprint(), "latency_ms": combine_latency(process_samples),
        "init_ms": float(np.median([w["init_ms"] for w in job.workers])),
        "first_ms": float(np.median([w["first_ms"] for w in job.workers])),
        **memory_fields(job.workers),
        "accuracy": None, "n_eval": 0, **scored, "accuracy_on": "device",
        "started_at": min(w["started_at"] for w in job.workers), "ended_at": max(w["ended_at"] for w in job.workers),
        "thermal": thermal_summary(first.get("board_before", {}), job.workers[-1].get("board_after", {})),
        # exactly the samples latency_ms was computed from (at most 5,000 of them, evenly spaced), so
        # that a reader can recompute every percentile and check it
        "samples_ms": subsample(pool_samples(process_samples), 5000),
        **({"op_profile": job.profile} if job.profile else {}),
    }


def run_jobs(jobs: list[Job], processes: int, target: str, progress=None, timeout: float | None = None,
             deadline: Deadline | None = None, profile: bool = False) -> list[dict]:
    """Measure every job in `processes` rounds, one fresh process per job and round; accuracy in round 1.
    With `profile`, one more process per job records an op profile, after the timed rounds: profiling
    perturbs timing, so no profiled process is timed.

    A job whose runtime is missing here (exit 3) is skipped with the reason and the others go on;
    use `skipped_rows(jobs)` for them. Any other failure raises AgentError. `timeout` limits each
    process, `deadline` all of them together.
    """
    for round_ in range(processes):
        for i, job in enumerate(jobs, 1):
            if job.skipped:
                continue
            if progress:
                progress(f"[round {round_ + 1}/{processes}, {i}/{len(jobs)}] {job.artifact}")
            try:
                job.workers.append(run_process([*job.command, *(["--accuracy"] if round_ == 0 else [])], timeout,
                                               deadline))
            except AgentError as exc:
                if exc.exit_code != 3:
                    raise
                job.skipped = str(exc)
    if profile:
        for i, job in enumerate(jobs, 1):
            if job.profilable and not job.skipped:
                if progress:
                    progress(f"[op profile, {i}/{len(jobs)}] {job.artifact}")
                job.profile = profile_process(job, timeout, deadline)
    return [merge(job, target) for job in jobs if not job.skipped]


def profile_process(job: Job, timeout: float | None, deadline: Deadline | None) -> dict:
    """The op profile of one job from its own process; a failed profile is recorded, not raised: the
    timings it would annotate stand without it (a deadline that passed still stops the target)."""
    try:
        found = run_process([*job.command, "--profile"], timeout, deadline)
    except AgentError as exc:
        if deadline and deadline.passed():
            raise
        return {"profiler": None, "why": f"the profiling process failed: {exc}"}
    if found.get("sha256") not in {w["sha256"] for w in job.workers}:
        return {"profiler": None, "why": "the file changed between timing and profiling"}
    return found


def skipped_rows(jobs: list[Job]) -> list[dict]:
    return [{"artifact": job.artifact, "reason": job.skipped} for job in jobs if job.skipped]


def worker_command(model: Path, eval_path: Path | None, threads: int, timing: Timing,
                   max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    cmd = [*agent_command(), "--worker", str(model), "--threads", str(threads),
           *timing.args(), "--max-bytes", str(max_bytes)]
    return cmd + (["--eval", str(eval_path)] if eval_path else [])


def model_job(model: Path, eval_path: Path | None, threads: int, timing: Timing,
              max_bytes: int = DEFAULT_MAX_BYTES) -> Job:
    """The job for one model file, named as its sidecar names it (export/student.onnx) or by its file name."""
    artifact = str(read_sidecar(model).get("file", model.name))
    return Job(artifact, worker_command(model, eval_path, threads, timing, max_bytes), profilable=True)


def measure_files(models: list[Path], eval_path: Path | None, threads: int, processes: int, timing: Timing,
                  target: str, progress=None, max_bytes: int = DEFAULT_MAX_BYTES, profile: bool = False) -> dict:
    if eval_path:
        check_eval(eval_path, max_bytes)  # once here, before any worker starts: a bad eval set is one message
    jobs = [model_job(model, eval_path, threads, timing, max_bytes) for model in models]
    results = run_jobs(jobs, processes, target, progress, profile=profile)
    skipped = skipped_rows(jobs)
    if skipped and not results:
        raise AgentError("nothing could be measured: " + "; ".join(f"{s['artifact']}: {s['reason']}" for s in skipped), 3)
    return {"schema": BENCH_SCHEMA, "target": target, "results": results, "skipped": skipped}

