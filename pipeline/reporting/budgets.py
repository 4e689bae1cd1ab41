"""The budgets file the release gate reads (TOML), loaded with the same typed loader as the config.

    [[budget]]                       # target and artifact are names or globs
    target = "pi4"
    artifact = "student.int8.tflite"
    max_p95_ms = 4.0                 # also max_p50_ms, max_p99_ms, max_size_kb, max_peak_rss_mb
    min_accuracy = 0.95              # fractions in [0, 1]
    max_accuracy_drop = 0.01         # below the same model's fp32 file on the same target

    [regression]                     # only with --baseline
    max_latency_increase = 0.10
    max_accuracy_decrease = 0.005
    inconclusive = "pass"            # what "cannot tell" does: pass (exit 0, the verdict shown), warn (exit 4), fail (exit 1)
    include_eager = false            # gate PyTorch eager rows (*.pt) too; they are a reference
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edgekd.errors import BudgetError, ConfigError
from edgekd.pipeline.config.typed import build, read_toml

LIMITS = ("max_p50_ms", "max_p95_ms", "max_p99_ms", "max_size_kb", "max_peak_rss_mb", "min_accuracy", "max_accuracy_drop")
FRACTIONS = ("min_accuracy", "max_accuracy_drop")


@dataclass(frozen=True)
class Budget:
    target: str = "*"
    artifact: str = "*"
    max_p50_ms: float | None = None
    max_p95_ms: float | None = None
    max_p99_ms: float | None = None
    max_size_kb: float | None = None
    max_peak_rss_mb: float | None = None
    min_accuracy: float | None = None
    max_accuracy_drop: float | None = None  # fraction below the same model's fp32 artifact on the same target
    line: int = field(default=0, metadata={"toml": False})


@dataclass(frozen=True)
class Regression:
    max_latency_increase: float = 0.10
    max_accuracy_decrease: float = 0.005
    # "cannot tell" is noise, not a broken budget: it passes (and is shown) unless asked otherwise
    inconclusive: Literal["warn", "fail", "pass"] = "pass"  # pass: exit 0; warn: exit 4; fail: exit 1
    include_eager: bool = False  # PyTorch eager rows (*.pt) are a reference, not gated by default


def _line_of(lines: list[str], index: int, key: str | None = None) -> int:
    """1-based line of the index-th [[budget]] header, or of `key` inside that block."""
    headers = [i for i, ln in enumerate(lines) if re.match(r"\s*\[\[\s*budget\s*\]\]", ln)]
    if index >= len(headers):
        return 0
    start, end = headers[index], headers[index + 1] if index + 1 < len(headers) else len(lines)
    if key:
        for i in range(start, end):
            if re.match(rf"\s*{re.escape(key)}\s*=", lines[i]):
                return i + 1
    return start + 1


def _check_budget(b: Budget, where: str) -> list[str]:
    problems = []
    for key in ("target", "artifact"):
        if not getattr(b, key):
            problems.append(f"{where}: {key} is empty; give a name or a glob such as \"*\"")
    for key in LIMITS:
        value = getattr(b, key)
        if value is None:
            continue
        if value < 0:
            problems.append(f"{where}: {key} = {value}: must be >= 0")
        if key in FRACTIONS and value > 1:
            problems.append(f"{where}: {key} = {value}: a fraction in [0, 1] (0.95 = 95 %)")
    if all(getattr(b, key) is None for key in LIMITS):
        problems.append(f"{where}: sets no limit; add e.g. max_p95_ms")
    return problems


def load_budgets(path: Path) -> tuple[list[Budget], Regression]:
    """Read a budgets file; every problem is reported at once, each with its line and key."""
    try:
        raw, text = read_toml(path, "budgets file")
    except ConfigError as exc:
        raise BudgetError(str(exc)) from None
    lines, problems = text.splitlines(), []
    unknown = sorted(set(raw) - {"budget", "regression"})
    if unknown:
        problems.append(f"unknown table(s) {', '.join(unknown)}; valid: [[budget]], [regression]")
    entries = raw.get("budget", [])
    if not isinstance(entries, list):
        problems.append("budget must be an array of tables, written [[budget]]")
        entries = []
    budgets = []
    for i, entry in enumerate(entries):
        where = f"line {_line_of(lines, i)}: budget #{i + 1}"
        budget = build(Budget, entry, f"budget #{i + 1}", problems,
                       locate=lambda key, i=i: f"line {_line_of(lines, i, key)}: ")
        budgets.append(Budget(**{**budget.__dict__, "line": _line_of(lines, i)}))
        problems += _check_budget(budget, where)
    reg_raw = raw.get("regression", {})
    regression = build(Regression, reg_raw if isinstance(reg_raw, dict) else {}, "regression", problems)
    for key in ("max_latency_increase", "max_accuracy_decrease"):
        if getattr(regression, key) < 0:
            problems.append(f"[regression] {key} = {getattr(regression, key)}: must be a fraction >= 0")
    if not budgets and not reg_raw:
        problems.append("no [[budget]] entries and no [regression] table: nothing to check")
    if problems:
        raise BudgetError(f"{path}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))
    return budgets, regression
