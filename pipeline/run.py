"""`edgekd run`: prepare data, then run the stages of the stage table in order, skipping fresh ones.

A stage is fresh when the config it reads, the data, and the recorded outputs of the stages it needs
hash as they did when it last finished, and its own outputs are still on disk unchanged. So changing
the temperature re-runs the student but neither the teacher nor the baseline, and a new benchmark
setting re-runs bench and report only.
"""
from __future__ import annotations

import contextlib
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgekd import __version__
from edgekd.errors import CheckFailed, DataError, MissingDependency, UsageError
from edgekd.fileio import STALE_GLOB, sha256_file, sha256_json, write_json, write_text
from edgekd.pipeline.config import PipelineConfig
from edgekd.pipeline.distributed import TRAINING_STAGES
from edgekd.pipeline.layout import MODELS, RunLayout
from edgekd.pipeline.lock import run_lock
from edgekd.pipeline.manifest import RunRecords
from edgekd.pipeline.progress import SilentProgress, TrainProgress
from edgekd.pipeline.stages import STAGE_NAMES, STAGES, check_names, downstream

log = logging.getLogger(__name__)


class ProcessLost(CheckFailed):
    """Under torchrun, another rank died or stopped answering."""


@dataclass
class RunSummary:
    layout: RunLayout
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    artifacts: list[dict] = field(default_factory=list)
    bench_outcomes: dict = field(default_factory=dict)  # target -> status, error, started_at, ended_at

    @property
    def run_dir(self) -> Path:
        return self.layout.home


def run_stages(layout: RunLayout, cfg: PipelineConfig, names: list[str], forced: set[str], records: RunRecords,
               data_hash: str, make_context: Callable[[], object], summary: RunSummary) -> None:
    """Run `names` (in table order), skipping each stage that is fresh and not in `forced`."""
    ctx = None
    for stage in (s for s in STAGES if s.name in names):
        key, manifest = stage.name, records.of(stage.name)
        if layout.variant and stage.shared:
            raise UsageError(f"variant {layout.variant!r} would rewrite the shared {key} stage; run the default "
                             f"student first (edgekd run CONFIG --out {layout.root})")
        config_hash = sha256_json(stage.reads_config(cfg))
        inputs = {"data": data_hash, **{f"file:{f}": sha256_file(Path(f)) for f in stage.reads_files(cfg)}}
        for need in stage.needs(cfg):
            inputs[need] = records.of(need).outputs_hash(need)
            if inputs[need] is None:
                raise UsageError(f"stage {stage.name} needs the {need} stage's outputs, which this run has not "
                                 f"written; run without --until, or add {need!r} where the config lists it")
        reason = "forced" if stage.name in forced else manifest.why_stale(key, config_hash, inputs)
        if reason is None:
            log.info("stage %s: up to date, skipped (config and inputs unchanged)", key)
            summary.skipped.append(stage.name)
            continue
        # about to read the needed stages' files: they must be what was recorded
        changed = [p for need in stage.needs(cfg) for p in records.of(need).changed_files(need)]
        if changed:
            raise DataError(f"stage {stage.name} would read files that are not what this run wrote: "
                            f"{'; '.join(changed)}. `edgekd run CONFIG --out {layout.root}` re-creates them")
        log.info("stage %s: running (%s)", f"{key}@{layout.variant}" if layout.variant else key, reason)
        ctx = ctx or make_context()
        ctx.resume_key = sha256_json({"config": config_hash, "inputs": inputs})
        brought = stage.name == "teacher" and cfg.teacher.checkpoint  # evaluated, not trained: rank 0 alone
        if ctx.dist is not None and stage.name in TRAINING_STAGES and not brought:  # the followers train with us
            ctx.dist.broadcast({"stage": stage.name, "resume_key": ctx.resume_key, **(
                {"teacher": layout.checkpoint("teacher").read_bytes()} if stage.name == "student" else {})})
        manifest.start(key)
        start = time.perf_counter()
        try:
            result = stage.function()(ctx)
        except KeyboardInterrupt:
            manifest.fail(key, "interrupted (Ctrl-C); run the same command to resume", status="interrupted")
            raise
        except RuntimeError as exc:
            manifest.fail(key, f"{type(exc).__name__}: {exc}")
            if ctx.dist is not None:  # gloo / NCCL: another rank stopped answering
                raise ProcessLost(f"stage {key}: a training process stopped ({str(exc).splitlines()[0][:200]}); "
                                  "finished stages and epochs are kept: run the same command to resume") from exc
            raise
        except BaseException as exc:
            manifest.fail(key, f"{type(exc).__name__}: {exc}")
            raise
        seconds = time.perf_counter() - start
        manifest.finish(key, seconds=seconds, config_hash=config_hash, input_hashes=inputs, outputs=result.outputs,
                        metrics=result.metrics)
        size = sum(p.stat().st_size for p in result.outputs)
        names_text = ", ".join(p.name for p in result.outputs) if len(result.outputs) <= 2 else f"{len(result.outputs)} files"
        log.info("stage %s: done in %.1f s (%s, %.0f KiB)", key, seconds, names_text, size / 1024)
        summary.ran.append(stage.name)


def _summarize(records: RunRecords, summary: RunSummary) -> None:
    for model in MODELS:
        entry = records.stage(model)
        if entry.get("status") == "done":
            summary.metrics[model] = entry["metrics"]
    summary.bench_outcomes = records.stage("bench").get("metrics", {}).get("targets", {})
    export = records.stage("export")
    if export.get("status") == "done":
        summary.artifacts = export["metrics"]["artifacts"]


def run_pipeline(cfg: PipelineConfig, run_dir: Path, until: str | None = None, force: tuple[str, ...] = (),
                 progress: Callable[[str], TrainProgress] = lambda label: SilentProgress(), variant: str = "",
                 only: tuple[str, ...] = ()) -> RunSummary:
    """Run the stages of `cfg` into `run_dir`, up to and including `until`.

    Args:
        cfg: the validated config.
        run_dir: the run directory; created if needed, reused to skip fresh stages.
        until: last stage to run (default: all).
        force: stages to re-run even when fresh; stages that depend on them re-run too.
        progress: makes one progress reporter per training stage.
        variant: run a further student of the same teacher under students/<variant>/.
        only: run just these stages (their inputs must exist), e.g. ("bench", "report").
    """
    import torch

    from edgekd.pipeline.data import prepare
    from edgekd.pipeline.distributed import Distributed, launched_by_torchrun
    from edgekd.pipeline.preflight import preflight
    from edgekd.pipeline.stages.context import StageContext
    from edgekd.pipeline.training.fit import pick_device

    check_names([*force, *([until] if until else []), *only])
    names = list(only) if only else list(STAGE_NAMES[: STAGE_NAMES.index(until) + 1] if until else STAGE_NAMES)
    layout = RunLayout(run_dir, variant)
    forced = downstream(set(force), cfg)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    dist = Distributed.start(cfg.run.device) if launched_by_torchrun() else None
    try:
        device = dist.device if dist else pick_device(cfg.run.device)
        if cfg.run.amp and device.type != "cuda":
            raise MissingDependency("run.amp = true needs a CUDA device, and torch sees none; set run.amp = false")
        data = prepare(cfg.data, cfg.run.seed)  # bad data fails before anything is written
        preflight(cfg, data, names)  # and so do models that cannot be built on it
        if dist is not None and not dist.leader:
            return _follow(cfg, layout, dist, data)
        layout.home.mkdir(parents=True, exist_ok=True)
        with run_lock(layout.root_lock, shared=bool(variant)), \
                (run_lock(layout.lock) if variant else contextlib.nullcontext()):
            records = _prepare_run_directory(layout, cfg, data, device)
            data_hash = records.root.data["data"]["fingerprint"]
            summary = RunSummary(layout)
            run_stages(layout, cfg, names, forced, records, data_hash, lambda: StageContext(
                cfg, layout, device, lambda: data, progress, dist=dist, _data=data), summary)
            _summarize(records, summary)
            write_json(layout.metrics, {"run": cfg.run.name, "variant": variant or None,
                                        "data": data.summary() | {"fingerprint": data_hash}, "models": summary.metrics})
        return summary
    finally:
        if dist is not None:
            if dist.leader:
                try:
                    dist.broadcast({"stage": None})  # release the followers, also after a failure
                except RuntimeError:
                    pass  # a follower is gone already
            dist.close()


def _follow(cfg: PipelineConfig, layout: RunLayout, dist, data) -> RunSummary:
    """A follower rank: train whatever stage rank 0 announces, write nothing, until rank 0 is done."""
    from edgekd.pipeline.stages import BY_NAME
    from edgekd.pipeline.stages.context import StageContext

    while (command := dist.broadcast()).get("stage"):
        ctx = StageContext(cfg, layout, dist.device, lambda: data, resume_key=command["resume_key"], dist=dist,
                           received=command, _data=data)
        BY_NAME[command["stage"]].function()(ctx)
    return RunSummary(layout)


def _prepare_run_directory(layout: RunLayout, cfg: PipelineConfig, data, device) -> RunRecords:
    """Clear what killed writes left, write the resolved config and the eval set, record the data."""
    import torch

    from edgekd.pipeline.data import write_eval

    for stale in layout.home.rglob(STALE_GLOB):  # left by a killed write; never under a final name
        stale.unlink()
    write_text(layout.config, cfg.to_toml())
    records = RunRecords(layout)
    # recorded like any output: a hand-edited config.toml (say, a looser max_int8_drop) is refused by
    # every later command instead of silently changing the file to ship
    records.home.record_files("config", [layout.config])
    root, data_hash = records.root, data.fingerprint()
    recorded = root.data.get("artifacts", {}).get(layout.manifest_rel(layout.eval_set), {}).get("sha256")
    if root.data.get("data", {}).get("fingerprint") != data_hash or not layout.eval_set.exists():
        write_eval(data, layout.eval_set)
    elif sha256_file(layout.eval_set) != recorded:
        log.warning("%s differs from the one written for this data (changed by hand?); writing it again",
                    layout.eval_set)
        write_eval(data, layout.eval_set)
    if not layout.variant:
        root.data.update({
            "run": cfg.run.name, "edgekd_version": __version__, "config_hash": sha256_json(cfg.as_dict()),
            "environment": {"python": platform.python_version(), "torch": torch.__version__,
                            "machine": platform.machine(), "device": str(device), "threads": torch.get_num_threads()},
            "data": {**data.summary(), "fingerprint": data_hash},
        })
        root.data["artifacts"][layout.manifest_rel(layout.eval_set)] = {
            "sha256": sha256_file(layout.eval_set), "size_bytes": layout.eval_set.stat().st_size, "stage": "data"}
        root.save()
    return records


def rerun_stages(cfg: PipelineConfig, run_dir: Path, names: tuple[str, ...], force: tuple[str, ...] = (),
                 variant: str = "") -> RunSummary:
    """Run post-training stages (bench, report) of an existing run, recorded in its manifest as if
    `edgekd run` had run them, without loading its data. A later `edgekd run` then re-runs nothing."""
    import torch

    from edgekd.pipeline.stages.context import StageContext

    check_names([*names, *force])
    layout = RunLayout(run_dir, variant)

    def no_data():
        raise UsageError(f"stages {', '.join(names)} cannot load the dataset here; run `edgekd run` instead")
    with run_lock(layout.root_lock, shared=bool(variant)), \
            (run_lock(layout.lock) if variant else contextlib.nullcontext()):
        records = RunRecords(layout)
        data_hash = records.root.data.get("data", {}).get("fingerprint")
        if data_hash is None:
            raise UsageError(f"{run_dir}: its manifest records no data; run `edgekd run CONFIG --out {run_dir}` first")
        records.verify()
        summary = RunSummary(layout)
        run_stages(layout, cfg, list(names), downstream(set(force), cfg), records, data_hash,
                   lambda: StageContext(cfg, layout, torch.device("cpu"), no_data), summary)
        _summarize(records, summary)
    return summary
