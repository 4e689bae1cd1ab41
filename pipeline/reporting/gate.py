"""The release gate: budgets and regressions as a pure function, results + budgets -> verdicts.

A latency regression is judged on the per-process medians the agent keeps (`process_p50`): the
slowdown is the Hodges-Lehmann shift between the two sets of log medians, with its distribution-free
95 % interval (Mann-Whitney). Processes, not samples, are the unit: on shared machines one process
can run 20 % slower than the next for its whole life, which samples inside a process never show.
The rule fails when even the interval's lower end exceeds the allowed increase, passes when its
upper end is within it, and is "inconclusive" otherwise, saying how many processes would decide it;
every latency verdict states the gate's resolution (the smallest slowdown that would have failed).
A file byte-identical to its baseline's, on the same runtime and device, passes: nothing changed.
Accuracy rules use the paired rule of `edgekd.paired` on the per-sample results.

Nothing passes on nothing: a budget rule that matches no result, or a baseline with no row in common,
is an error (exit 2); a baseline row missing from the report and a limit on a value that was not
measured are failed verdicts. PyTorch eager rows (`*.pt`) are a reference: only a budget that names
them (`artifact = "student.pt"` or a `*.pt` glob) or `[regression] include_eager = true` gates them.
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
from edgekd.paired import judge_rows
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


def _is_eager(result: dict) -> bool:
    return result["artifact"].endswith(".pt")


def _matches(budget: Budget, result: dict) -> bool:
    art = result["artifact"]
    if _is_eager(result) and not budget.artifact.endswith(".pt"):
        return False  # the PyTorch reference is gated only when a budget names it
    return fnmatch.fnmatchcase(result["target"], budget.target) and (
        fnmatch.fnmatchcase(art, budget.artifact) or fnmatch.fnmatchcase(art.rsplit("/", 1)[-1], budget.artifact))


def _model_of(result: dict, artifacts: dict) -> str:
    a = artifacts.get(result["artifact"])
    return a["model"] if a else result["artifact"].removesuffix(".pt")


def _fp32_reference(report: dict, result: dict, artifacts: dict) -> dict | None:
    """The same model's fp32 result on the same target, same format first (None: not measured there)."""
    a = artifacts.get(result["artifact"])
    same = [r for r in report["results"] if r["target"] == result["target"] and r is not result
            and r.get("threads", 1) == result.get("threads", 1) and r.get("accuracy") is not None
            and (artifacts.get(r["artifact"]) or {}).get("precision", "fp32") == "fp32"
            and _model_of(r, artifacts) == _model_of(result, artifacts)]
    same_format = [r for r in same if a and (artifacts.get(r["artifact"]) or {}).get("format") == a["format"]]
    exported = [r for r in same if not _is_eager(r)]
    return (same_format or exported or same or [None])[0]


def _verdict(rule: str, result: dict, limit: float, measured: float, kind: str, ci=None) -> Verdict:
    margin = limit - measured if kind == "max" else measured - limit
    # a value exactly at the limit passes; 0.96 - 0.95 is 0.010000000000000009 in floating point
    at_limit = abs(margin) <= 1e-9 * max(1.0, abs(limit))
    return Verdict(rule, result["target"], result["artifact"], limit, measured, ci, margin,
                   "pass" if margin >= 0 or at_limit else "fail")


def _not_measured(rule: str, result: dict, limit: float, what: str) -> Verdict:
    """A limit on a value this result does not have fails: a budget must never pass on nothing."""
    return Verdict(rule, result["target"], result["artifact"], limit, math.nan, None, math.nan, "fail",
                   f"not measured: {what}")


def _paired_verdict(rule: str, reference: dict, result: dict, limit: float) -> Verdict:
    """The paired non-inferiority rule: fail beyond the limit, pass within it, inconclusive between."""
    try:
        d = judge_rows(reference, result, limit)
    except ValueError as exc:
        return _not_measured(rule, result, limit, str(exc))
    status: Status = {"pass": "pass", "fail": "fail", "cannot tell": "inconclusive"}[d.verdict]
    note = f"against {reference['artifact']}: {d.describe()}" if d.verdict != "pass" else ""
    return Verdict(rule, result["target"], result["artifact"], limit, d.drop, d.ci95, limit - d.ci95[1], status, note)


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
                if limit is None:
                    continue
                value = read(r, a)
                if value is None:
                    verdicts.append(_not_measured(rule, r, limit, f"{r['target']} gave no {rule.split('_', 1)[1]} "
                                                                  f"for {r['artifact']}"))
                    continue
                ci = tuple(r["latency_ms"]["p50_ci95"]) if rule == "max_p50_ms" else None
                verdicts.append(_verdict(rule, r, limit, value, kind, ci))
            if b.max_accuracy_drop is not None:
                if (a or {}).get("precision", "fp32") == "fp32":
                    continue  # an fp32 file is its own model's reference
                ref = _fp32_reference(report, r, artifacts)
                if ref is None or r.get("accuracy") is None:
                    verdicts.append(_not_measured("max_accuracy_drop", r, b.max_accuracy_drop,
                                                  f"no fp32 result of {_model_of(r, artifacts)} on {r['target']} to "
                                                  "compare with; measure its fp32 file there too"))
                else:
                    verdicts.append(_paired_verdict("max_accuracy_drop", ref, r, b.max_accuracy_drop))
    if unmatched:
        targets = sorted({r["target"] for r in report["results"]})
        names = sorted({r["artifact"] for r in report["results"]})
        raise BudgetError("budget(s) match no result (a typo must not pass a release):\n" + "\n".join(
            f"  - line {b.line}: target {b.target!r}, artifact {b.artifact!r}" for b in unmatched) +
            f"\n  the report has targets {targets} and artifacts {names} (PyTorch rows *.pt only match a "
            "budget whose artifact names them)")
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
    """Judge the slowdown of per-process medians `new` over `old`: (status, point, lo, hi, note), as fractions.
    The note always ends with the resolution: the smallest slowdown these processes could have failed."""
    if min(v for v in (*new, *old)) <= 0:
        raise BudgetError("latency medians must be positive")
    log_new, log_old = [math.log(v) for v in new], [math.log(v) for v in old]
    est, lo, hi, coverage = shift_interval(log_new, log_old)
    threshold = math.log1p(limit)
    point, lo_frac, hi_frac = math.expm1(est), math.expm1(lo), math.expm1(hi)
    # a true slowdown s fails once s - (est - lo) > threshold: the interval's lower reach sets the resolution
    resolution = (f"resolution: with {len(new)} and {len(old)} processes a slowdown above "
                  f"{100 * math.expm1(threshold + est - lo):.0f} % would have failed")
    if coverage < 0.95:  # no slowdown, however large, could fail: a rule that cannot fail must not pass
        return "fail", point, lo_frac, hi_frac, (
            f"cannot be judged: {len(new)} and {len(old)} processes give at most {100 * coverage:.0f} % coverage, "
            "and no slowdown could fail; measure at least 4 processes per side (bench.processes, default 5)")
    if lo > threshold:
        return "fail", point, lo_frac, hi_frac, resolution
    if hi <= threshold:
        return "pass", point, lo_frac, hi_frac, resolution
    spread = [statistics.stdev(v) for v in (log_new, log_old) if len(v) > 1]
    sigma = max(spread) if spread else 0.0
    distance = abs(est - threshold)
    needed = max(4, math.ceil(8 * sigma ** 2 / distance ** 2)) if distance > 1e-12 else None
    why = "the process-to-process noise is wider than the threshold"
    hint = (f"about {needed} processes per side would decide it (bench.processes, or --processes on the agent)"
            if needed else "the slowdown sits exactly at the threshold")
    return "inconclusive", point, lo_frac, hi_frac, f"{why}; {hint}; {resolution}"


def _same_measured_thing(new: dict, old: dict) -> bool:
    """The same bytes on the same runtime and machine: any latency or accuracy difference is noise."""
    def identity(r: dict) -> tuple:
        device = r.get("device") or {}
        return (r.get("sha256"), r.get("runtime"), r.get("runtime_version"), device.get("machine"),
                device.get("processor"), r.get("n_eval"))
    return new.get("sha256") is not None and identity(new) == identity(old)


def _row_key(r: dict) -> tuple:  # one file may be measured with several thread counts and delegates
    return r["target"], r["artifact"], r.get("threads", 1), r.get("delegate")


def _row_name(key: tuple) -> str:
    target, artifact, threads, delegate = key
    return f"{artifact} on {target}" + (f" ({threads} threads)" if threads != 1 else "") + (f" [{delegate}]" if delegate else "")


def check_regression(report: dict, baseline: dict, reg: Regression) -> list[Verdict]:
    """Latency (per-process medians) and accuracy (paired, per sample) of every baseline row against the
    same row now. BudgetError when the two reports share no row: a comparison of nothing passes nothing."""
    old = {_row_key(r): r for r in baseline["results"] if reg.include_eager or not _is_eager(r)}
    new = {_row_key(r): r for r in report["results"] if reg.include_eager or not _is_eager(r)}
    if not set(old) & set(new):
        raise BudgetError("the baseline shares no result with this report (same target, file and threads), so "
                          "nothing can be compared:\n  baseline: " + (", ".join(map(_row_name, sorted(old))) or "none") +
                          "\n  report:   " + (", ".join(map(_row_name, sorted(new))) or "none") +
                          "\n  gate against a baseline of the same project and targets")
    verdicts = []
    for k in sorted(set(old) - set(new)):
        verdicts.append(Verdict("present", k[0], k[1], 0.0, math.nan, None, math.nan, "fail",
                                f"{_row_name(k)} is in the baseline but not in this report (renamed, dropped or not "
                                "measured); measure it, or gate against a baseline without it"))
    for k in sorted(set(old) & set(new)):
        r, b = new[k], old[k]
        if r["n_eval"] != b["n_eval"]:
            raise BudgetError(f"{r['artifact']} on {r['target']}: accuracy measured on {r['n_eval']} samples now and "
                              f"{b['n_eval']} in the baseline; compare reports made on the same eval set")
        limit = reg.max_latency_increase
        new_p50s, old_p50s = r["latency_ms"].get("process_p50"), b["latency_ms"].get("process_p50")
        same = _same_measured_thing(r, b)
        if same:
            point = r["latency_ms"]["p50"] / b["latency_ms"]["p50"] - 1
            status, lo, hi, note = "pass", point, point, "the same file, runtime and machine as the baseline"
            if new_p50s and old_p50s:  # what a changed file would have had to beat
                note += "; " + latency_regression(new_p50s, old_p50s, limit)[4].rsplit("; ", 1)[-1]
        elif new_p50s and old_p50s:
            status, point, lo, hi, note = latency_regression(new_p50s, old_p50s, limit)
        else:  # a rule that cannot be judged fails: it must not pass a release on nothing
            point = r["latency_ms"]["p50"] / b["latency_ms"]["p50"] - 1
            status, lo, hi = "fail", point, point
            note = ("cannot be judged: no per-process medians in " + ("the baseline" if new_p50s else "this report") +
                    " (measured by an older edgekd); re-measure it with `edgekd bench`")
        verdicts.append(Verdict("max_latency_increase", r["target"], r["artifact"], limit, point, (lo, hi),
                                limit - lo, status, note))
        if same:
            verdicts.append(Verdict("max_accuracy_decrease", r["target"], r["artifact"], reg.max_accuracy_decrease,
                                    0.0, (0.0, 0.0), reg.max_accuracy_decrease, "pass",
                                    "the same file on the same eval set"))
        else:
            verdicts.append(_paired_verdict("max_accuracy_decrease", b, r, reg.max_accuracy_decrease))
    return verdicts


def exit_code(verdicts: list[Verdict], reg: Regression) -> int:
    """0 all pass; 1 any fail; an inconclusive verdict follows `inconclusive` (pass: 0, the default, so
    that noise never fails a release; warn: 4; fail: 1)."""
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
    return _without_stale_rows(report)


def _without_stale_rows(report: dict) -> dict:
    """Rows whose sha256 is not their file's (a report written before edgekd kept them apart) move to
    `stale`: no budget or baseline is judged on a file that is not there. Rows of files the report
    does not list (the PyTorch checkpoints) are checked against the run by `_check_against_run`."""
    from edgekd.pipeline.reporting.report import split_stale

    current = {a["file"]: a.get("sha256") for a in report.get("artifacts", [])}
    listed = [r for r in report["results"] if current.get(r["artifact"]) and r.get("sha256")]
    fresh, stale = split_stale(listed, current)
    kept = {id(r) for r in fresh} | {id(r) for r in report["results"]} - {id(r) for r in listed}
    return {**report, "results": [r for r in report["results"] if id(r) in kept],
            "stale": [*report.get("stale", []), *stale]}


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
