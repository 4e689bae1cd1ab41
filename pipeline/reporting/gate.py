"""The release gate: budgets and regressions as a pure function, results + budgets -> verdicts.

A latency regression is judged on the per-process medians the agent keeps (`process_p50`): the
slowdown is the Hodges-Lehmann shift between the two sets of log medians, with its distribution-free
95 % interval (Mann-Whitney). Processes, not samples, are the unit: on shared machines one process
can run 20 % slower than the next for its whole life, which samples inside a process never show.
The rule fails when even the interval's lower end exceeds the allowed increase, passes when its
upper end is within it, and is "inconclusive" otherwise, saying how many processes would decide it.
Accuracy regressions compare exact correct-counts on the same eval set.
"""
from __future__ import annotations

import fnmatch
import functools
import math
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgekd.errors import BudgetError
from edgekd.pipeline.reporting.budgets import Budget, Regression
from edgekd.pipeline.reporting.schema import report_problems

Status = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class Verdict:
    rule: str
    target: str
    artifact: str
    budget: float
    measured: float
    ci: tuple[float, float] | None
    margin: float  # positive: inside the budget
    status: Status
    note: str = ""


RULES = {  # budget key -> (how to read the measured value, "max" or "min")
    "max_p50_ms": (lambda r, a: r["latency_ms"]["p50"], "max"),
    "max_p95_ms": (lambda r, a: r["latency_ms"]["p95"], "max"),
    "max_p99_ms": (lambda r, a: r["latency_ms"]["p99"], "max"),
    "max_size_kb": (lambda r, a: a["size_bytes"] / 1024 if a else None, "max"),
    "max_peak_rss_mb": (lambda r, a: r["peak_rss_mb"], "max"),
    "min_accuracy": (lambda r, a: r["accuracy"], "min"),
}


def _matches(budget: Budget, result: dict) -> bool:
    art = result["artifact"]
    return fnmatch.fnmatchcase(result["target"], budget.target) and (
        fnmatch.fnmatchcase(art, budget.artifact) or fnmatch.fnmatchcase(art.rsplit("/", 1)[-1], budget.artifact))


def _fp32_reference(report: dict, result: dict, artifacts: dict) -> dict | None:
    """The same model's fp32 result on the same target, same format first."""
    a = artifacts.get(result["artifact"])
    model = a["model"] if a else result["artifact"].removesuffix(".pt")
    same_target = [r for r in report["results"] if r["target"] == result["target"]]
    fp32 = [r for r in same_target if (artifacts.get(r["artifact"]) or {}).get("precision", "fp32") == "fp32"
            and ((artifacts.get(r["artifact"]) or {}).get("model") or r["artifact"].removesuffix(".pt")) == model]
    same_format = [r for r in fp32 if a and (artifacts.get(r["artifact"]) or {}).get("format") == a["format"]]
    return (same_format or fp32 or [None])[0]


def _verdict(rule: str, result: dict, limit: float, measured: float, kind: str, ci=None) -> Verdict:
    margin = limit - measured if kind == "max" else measured - limit
    # a value exactly at the limit passes; 0.96 - 0.95 is 0.010000000000000009 in floating point
    at_limit = abs(margin) <= 1e-9 * max(1.0, abs(limit))
    return Verdict(rule, result["target"], result["artifact"], limit, measured, ci, margin,
                   "pass" if margin >= 0 or at_limit else "fail")


def check(report: dict, budgets: list[Budget]) -> list[Verdict]:
    """Every budget against every matching result. Raises BudgetError for a budget that matches nothing."""
    artifacts = {a["file"]: a for a in report.get("artifacts", [])}
    verdicts, unmatched = [], []
    for b in budgets:
        matched = [r for r in report["results"] if _matches(b, r)]
        if not matched:
            unmatched.append(b)
        for r in matched:
            a = artifacts.get(r["artifact"])
            for rule, (read, kind) in RULES.items():
                limit = getattr(b, rule)
                value = read(r, a) if limit is not None else None
                if value is not None:
                    ci = tuple(r["latency_ms"]["p50_ci95"]) if rule == "max_p50_ms" else None
                    verdicts.append(_verdict(rule, r, limit, value, kind, ci))
            if b.max_accuracy_drop is not None:
                ref = _fp32_reference(report, r, artifacts)
                if ref is not None and ref is not r:
                    verdicts.append(_verdict("max_accuracy_drop", r, b.max_accuracy_drop,
                                             ref["accuracy"] - r["accuracy"], "max"))
    if unmatched:
        targets = sorted({r["target"] for r in report["results"]})
        names = sorted({r["artifact"] for r in report["results"]})
        raise BudgetError("budget(s) match no result (a typo must not pass a release):\n" + "\n".join(
            f"  - line {b.line}: target {b.target!r}, artifact {b.artifact!r}" for b in unmatched) +
            f"\n  the report has targets {targets} and artifacts {names}")
    return verdicts


@functools.lru_cache(maxsize=None)
def _mann_whitney_counts(m: int, n: int) -> tuple[int, ...]:
    """How many of the C(m+n, m) orderings of two samples give each value of U = 0 .. m*n."""
    if m == 0 or n == 0:
        return (1,)
    with_last_of_first = _mann_whitney_counts(m - 1, n)  # the largest value is from the first sample: U += n
    with_last_of_second = _mann_whitney_counts(m, n - 1)
    counts = [0] * (m * n + 1)
    for u, c in enumerate(with_last_of_first):
        counts[u + n] += c
    for u, c in enumerate(with_last_of_second):
        counts[u] += c
    return tuple(counts)


def shift_interval(new: list[float], old: list[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """Hodges-Lehmann estimate of how much larger `new` is than `old`, with its distribution-free
    interval from the Mann-Whitney distribution: (estimate, lo, hi, coverage).

    With too few values for `level` the interval is the whole range of pairwise differences and the
    coverage says what it really is (4 + 4 values reach 97 %; 3 + 3 only 90 %).
    """
    diffs = sorted(a - b for a in new for b in old)
    counts = _mann_whitney_counts(len(new), len(old))
    total = sum(counts)
    # [diffs[k], diffs[-1-k]] misses the true shift on each side with probability P(U <= k)
    k = 0
    while k + 1 < len(counts) and 2 * sum(counts[:k + 2]) / total <= 1 - level:
        k += 1
    mid = len(diffs) // 2
    estimate = diffs[mid] if len(diffs) % 2 else (diffs[mid - 1] + diffs[mid]) / 2
    return estimate, diffs[k], diffs[len(diffs) - 1 - k], 1 - 2 * sum(counts[:k + 1]) / total


def latency_regression(new: list[float], old: list[float], limit: float) -> tuple[Status, float, float, float, str]:
    """Judge the slowdown of per-process medians `new` over `old`: (status, point, lo, hi, note), as fractions."""
    if min(v for v in (*new, *old)) <= 0:
        raise BudgetError("latency medians must be positive")
    log_new, log_old = [math.log(v) for v in new], [math.log(v) for v in old]
    est, lo, hi, coverage = shift_interval(log_new, log_old)
    threshold = math.log1p(limit)
    point, lo_frac, hi_frac = math.expm1(est), math.expm1(lo), math.expm1(hi)
    if coverage >= 0.95 and lo > threshold:
        return "fail", point, lo_frac, hi_frac, ""
    if coverage >= 0.95 and hi <= threshold:
        return "pass", point, lo_frac, hi_frac, ""
    spread = [statistics.stdev(v) for v in (log_new, log_old) if len(v) > 1]
    sigma = max(spread) if spread else 0.0
    distance = abs(est - threshold)
    needed = max(4, math.ceil(8 * sigma ** 2 / distance ** 2)) if distance > 1e-12 else None
    why = (f"only {len(new)} and {len(old)} processes (an interval with 95 % coverage needs at least 4 per side)"
           if coverage < 0.95 else "the process-to-process noise is wider than the threshold")
    hint = (f"about {needed} processes per side would decide it (bench.processes, or --processes on the agent)"
            if needed else "the slowdown sits exactly at the threshold")
    return "inconclusive", point, lo_frac, hi_frac, f"{why}; {hint}"


def check_regression(report: dict, baseline: dict, reg: Regression) -> list[Verdict]:
    """Latency (per-process medians) and accuracy (exact counts) of results present in both reports."""
    def key(r: dict) -> tuple:  # one file may be measured with several thread counts and delegates
        return r["target"], r["artifact"], r.get("threads", 1), r.get("delegate")
    old = {key(r): r for r in baseline["results"]}
    verdicts = []
    for r in report["results"]:
        b = old.get(key(r))
        if b is None:
            continue
        limit = reg.max_latency_increase
        new_p50s, old_p50s = r["latency_ms"].get("process_p50"), b["latency_ms"].get("process_p50")
        if new_p50s and old_p50s:
            status, point, lo, hi, note = latency_regression(new_p50s, old_p50s, limit)
        else:
            point = r["latency_ms"]["p50"] / b["latency_ms"]["p50"] - 1
            status, lo, hi = "inconclusive", point, point
            note = ("no per-process medians in " + ("the baseline" if new_p50s else "this report") +
                    " (measured by an older edgekd); re-measure it with `edgekd bench`")
        verdicts.append(Verdict("max_latency_increase", r["target"], r["artifact"], limit, point, (lo, hi),
                                limit - lo, status, note))
        if r["n_eval"] != b["n_eval"]:
            raise BudgetError(f"{r['artifact']} on {r['target']}: accuracy measured on {r['n_eval']} samples now and "
                              f"{b['n_eval']} in the baseline; compare reports made on the same eval set")
        correct_new, correct_old = round(r["accuracy"] * r["n_eval"]), round(b["accuracy"] * b["n_eval"])
        decrease = (correct_old - correct_new) / r["n_eval"]
        verdicts.append(Verdict("max_accuracy_decrease", r["target"], r["artifact"], reg.max_accuracy_decrease,
                                decrease, None, reg.max_accuracy_decrease - decrease,
                                "pass" if decrease <= reg.max_accuracy_decrease else "fail"))
    return verdicts


def exit_code(verdicts: list[Verdict], reg: Regression) -> int:
    """0 all pass; 1 any fail (or inconclusive with inconclusive = 'fail'); 4 inconclusive with 'warn'."""
    statuses = {v.status for v in verdicts}
    if "fail" in statuses:
        return 1
    if "inconclusive" in statuses:
        return {"fail": 1, "warn": 4, "pass": 0}[reg.inconclusive]
    return 0


def load_report(path: Path) -> dict:
    """A report.json to gate; BudgetError (exit 2) when it is not one."""
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BudgetError(f"{path}: not a readable report ({exc}); pass the report.json that `edgekd report` wrote") from None
    problems = report_problems(report)
    if problems:
        raise BudgetError(f"{path}: not a valid report, {len(problems)} problem(s):\n" +
                          "\n".join(f"  - {p}" for p in problems[:20]) + ("\n  ..." if len(problems) > 20 else ""))
    _check_against_run(path, report)
    return report


def _check_against_run(path: Path, report: dict) -> None:
    """When the report still sits in its run directory: it and the files it describes must be what
    edgekd wrote (a report gated after a file changed would vouch for a file that is not there)."""
    from edgekd.fileio import sha256_file
    from edgekd.pipeline.manifest import Manifest

    manifest_path = path.parent / "manifest.json"
    if not manifest_path.is_file():
        return  # a report copied out of its run (CI artifacts): nothing to compare with
    manifest = Manifest.load(manifest_path)
    problems = []
    for rel, entry in manifest.data.get("artifacts", {}).items():
        file = manifest_path.parent / rel
        if not file.exists() or sha256_file(file) != entry["sha256"]:
            problems.append(f"{rel} {'is gone' if not file.exists() else 'changed after edgekd wrote it'}")
    for a in report.get("artifacts", []):
        file = path.parent / a["file"]
        if a.get("sha256") and file.is_file() and sha256_file(file) != a["sha256"]:
            problems.append(f"{a['file']} changed after the report was written")
        elif a.get("sha256") and not file.exists():
            problems.append(f"{a['file']} is gone")
    if problems:
        raise BudgetError(f"{path}: the report no longer describes its run: {'; '.join(problems)}; run `edgekd report "
                          f"{path.parent}` (after `edgekd run` re-creates changed files) and gate the new report")
