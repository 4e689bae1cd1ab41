"""Per target, the file to ship: the fastest exported file (p50, with its per-process range) whose
accuracy on that target is within `export.max_int8_drop` of the teacher's fp32 file there, and that
fits the budgets when a budgets file is given; with the runner-up and why it lost.

Every number comes from the target's own results: on x86 an int8 CNN can be slower than its fp32
file while on ARM it is usually faster, so no rule of thumb is applied.
"""
from __future__ import annotations

from edgekd.pipeline.console import fmt_ms, fmt_pct, fmt_points


def _teacher_reference(rows: list[dict], artifacts: dict[str, dict], models: dict) -> tuple[float, str]:
    """The teacher's fp32 accuracy on this target (its best fp32 file), else its PyTorch accuracy."""
    fp32 = [r for r in rows if artifacts.get(r["artifact"], {}).get("model") == "teacher"
            and artifacts[r["artifact"]].get("precision") == "fp32"]
    if fp32:
        best = max(fp32, key=lambda r: r["accuracy"])
        return best["accuracy"], best["artifact"]
    return models["teacher"]["accuracy"], "teacher (PyTorch; no teacher file measured on this target)"


def recommend(report: dict, max_drop: float, budget_fails: set[tuple[str, str]] = frozenset()) -> dict[str, dict]:
    """{target: {ship, runner_up, why, excluded, reference}} from the report's results.

    `budget_fails` holds (target, artifact) pairs some budget failed; those files are not shipped.
    """
    artifacts = {a["file"]: a for a in report["artifacts"]}
    by_target: dict[str, list[dict]] = {}
    for r in report["results"]:
        if r["artifact"] in artifacts and r.get("accuracy") is not None:
            by_target.setdefault(r["target"], []).append(r)
    out = {}
    for target, rows in by_target.items():
        reference, ref_name = _teacher_reference(rows, artifacts, report["models"])
        eligible, excluded = [], []
        for r in sorted(rows, key=lambda r: r["latency_ms"]["p50"]):
            drop = reference - r["accuracy"]
            label = r["artifact"] + (f" ({r['threads']} threads)" if r.get("threads", 1) != 1 else "")
            if drop > max_drop + 1e-12:
                excluded.append({"artifact": label, "why": f"accuracy {fmt_pct(r['accuracy'])} is {fmt_points(-drop)} from "
                                                           f"the teacher's fp32 {fmt_pct(reference)} (limit {100 * max_drop:.2f} pts)"})
            elif (target, r["artifact"]) in budget_fails:
                excluded.append({"artifact": label, "why": "breaks a budget (see edgekd gate)"})
            else:
                eligible.append((label, r))
        entry = {"reference": {"accuracy": reference, "file": ref_name, "max_drop": max_drop}, "excluded": excluded,
                 "ship": None, "runner_up": None, "why": "no file qualifies" if not eligible else ""}
        if eligible:
            (name, best), *rest = eligible
            entry.update(ship=name, p50_ms=best["latency_ms"]["p50"], accuracy=best["accuracy"],
                         throttled=bool(best.get("thermal", {}).get("throttled")))
            if rest:
                second_name, second = rest[0]
                lo_best, hi_best = best["latency_ms"]["p50_ci95"]
                lo_second = second["latency_ms"]["p50_ci95"][0]
                ratio = second["latency_ms"]["p50"] / best["latency_ms"]["p50"]
                noise = ("; their per-process ranges overlap, so the order may flip on a re-measurement"
                         if lo_second <= hi_best else "")
                entry.update(runner_up=second_name,
                             why=f"{second_name} is slower: p50 {fmt_ms(second['latency_ms']['p50'])} vs "
                                 f"{fmt_ms(best['latency_ms']['p50'])} ({ratio:.2f}x){noise}")
        out[target] = entry
    return out


def markdown_lines(recommendations: dict[str, dict], target: str) -> list[str]:
    rec = recommendations.get(target)
    if not rec:
        return []
    if not rec["ship"]:
        return ["", f"**File to ship on `{target}`: none qualifies** (within {100 * rec['reference']['max_drop']:.2f} "
                    f"pts of the teacher's fp32 accuracy {fmt_pct(rec['reference']['accuracy'])})."]
    lines = ["", f"**File to ship on `{target}`: {rec['ship']}** — p50 {fmt_ms(rec['p50_ms'])}"
                 f"{' (measured while throttled)' if rec.get('throttled') else ''}, accuracy {fmt_pct(rec['accuracy'])} "
                 f"(teacher fp32 {fmt_pct(rec['reference']['accuracy'])}, {rec['reference']['file']})."]
    if rec["runner_up"]:
        lines.append(f"Runner-up: {rec['why']}.")
    for e in rec["excluded"][:5]:
        lines.append(f"Not eligible: {e['artifact']}: {e['why']}.")
    return lines
