"""The Python API: the code the `edgekd` command calls, for notebooks and scripts.

    import edgekd

    run = edgekd.run("configs/digits.toml", out="runs/digits", distill__temperature=8)
    run.metrics["student"]["accuracy"]          # PyTorch test accuracy of the distilled student
    run.ship("local")                           # the file to ship on a target, with why
    student = edgekd.load_model(run.dir / "student.pt")
    verdict = edgekd.gate(run.dir / "report.json", "examples/budgets.toml")
    verdict.exit_code, verdict.verdicts

Errors are the project's exceptions (`edgekd.errors`: ConfigError, DataError, ...), whose message says
what is wrong and the fix, and whose `exit_code` is what the command line would exit with.
Nothing here imports torch until a function that trains or loads a model is called.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Run", "GateResult", "run", "load_run", "load_model", "gate"]


@dataclass(frozen=True)
class Run:
    """A finished (or partly finished) run directory, as the manifest recorded it."""

    dir: Path
    metrics: dict = field(default_factory=dict)  # per model: arch, params, MACs, test accuracy, epochs, seconds
    files: dict[str, Path] = field(default_factory=dict)  # every file the run recorded, by its relative name
    report: dict | None = None  # report.json, when the report stage ran

    @property
    def results(self) -> list[dict]:
        """The measurements of the files there now, every target (report.json's `results`)."""
        return (self.report or {}).get("results", [])

    def ship(self, target: str = "local") -> dict | None:
        """The report's recommendation for `target`: the file to ship, the runner-up and why."""
        return (self.report or {}).get("recommendations", {}).get(target)

    def model(self, name: str = "student"):
        """The PyTorch model `name` (teacher, baseline, student) rebuilt from its checkpoint, in eval mode."""
        return load_model(self.dir / f"{name}.pt")


@dataclass(frozen=True)
class GateResult:
    """What `edgekd gate` decides: every verdict, the exit code, and the rows it did not judge."""

    verdicts: list = field(default_factory=list)  # edgekd.pipeline.reporting.gate.Verdict
    exit_code: int = 0  # 0 pass, 1 a rule failed (4: inconclusive with inconclusive = "warn")
    stale: list[dict] = field(default_factory=list)  # rows measured on files re-created since

    @property
    def passed(self) -> bool:
        return self.exit_code == 0


def _override(key: str, value: Any) -> str:
    """`distill__temperature=8` (or `**{"distill.temperature": 8}`) as the command line's `--set`."""
    import tomli_w

    dotted = key.replace("__", ".")
    if isinstance(value, str):  # as on the command line: a bare string is taken as it is
        return f"{dotted}={value}"
    return f"{dotted}={tomli_w.dumps({'v': value}).partition('=')[2].strip()}"


def run(config: str | Path, out: str | Path | None = None, *, until: str | None = None,
        force: tuple[str, ...] = (), **overrides: Any) -> Run:
    """Run the pipeline of `config` (a TOML file) into `out` (default runs/<run.name>), as `edgekd run`.

    Overrides are config keys with `__` for the dots (`student__train__epochs=3`). Stages whose config
    and inputs are unchanged are skipped; a killed run resumes.

    Raises:
        ConfigError: an unknown key, a wrong type or an impossible value (all of them listed).
        CheckFailed: a parity or int8 check failed.
    """
    from edgekd.pipeline.config import load_config
    from edgekd.pipeline.run import run_pipeline

    cfg = load_config(Path(config), [_override(k, v) for k, v in overrides.items()])
    directory = Path(out) if out is not None else Path("runs") / cfg.run.name
    summary = run_pipeline(cfg, directory.resolve(), until=until, force=tuple(force))
    return load_run(summary.layout.home)


def load_run(directory: str | Path) -> Run:
    """A run directory as a `Run`, after checking every recorded file against its sha256.

    Raises:
        UsageError: `directory` is not a run directory.
        DataError: a file is not what the run wrote (its message names it and the fix).
    """
    from edgekd.errors import UsageError
    from edgekd.pipeline.layout import RunLayout
    from edgekd.pipeline.manifest import RunRecords

    layout = RunLayout(Path(directory).resolve())
    if not layout.manifest.is_file():
        raise UsageError(f"{directory}: not an edgekd run directory (no manifest.json)")
    records = RunRecords(layout)
    records.verify()
    files = {rel: layout.home / rel for rel in records.home.data.get("artifacts", {})}
    read = lambda path: json.loads(path.read_text()) if path.is_file() else None  # noqa: E731
    return Run(layout.home, (read(layout.metrics) or {}).get("models", {}), files, read(layout.report_json))


def load_model(file: str | Path):
    """The PyTorch model stored in an edgekd checkpoint (teacher.pt, baseline.pt, student.pt), in eval mode.

    Raises:
        DataError: the file is missing, truncated or not an edgekd checkpoint.
    """
    from edgekd.pipeline.training.checkpoint import load_checkpoint

    return load_checkpoint(Path(file))[0]


def gate(report: str | Path, budgets: str | Path, baseline: str | Path | None = None) -> GateResult:
    """Check `report` (a report.json) against a budgets file, and against `baseline` when given, as
    `edgekd gate` does.

    Raises:
        BudgetError: a malformed budgets file or report, a budget that matches no result, a baseline
            that shares no row, or only [regression] without a baseline.
    """
    from edgekd.errors import BudgetError
    from edgekd.pipeline.reporting.budgets import load_budgets
    from edgekd.pipeline.reporting.gate import check, check_regression, exit_code, load_report

    rules, regression = load_budgets(Path(budgets))
    if not rules and baseline is None:
        raise BudgetError(f"{budgets}: only [regression], which compares with a baseline, and no --baseline: "
                          "nothing would be checked; pass --baseline BASELINE/report.json or add [[budget]] entries")
    current = load_report(Path(report))
    verdicts = check(current, rules)
    if baseline is not None:
        verdicts += check_regression(current, load_report(Path(baseline)), regression)
    return GateResult(verdicts, exit_code(verdicts, regression), current.get("stale", []))
