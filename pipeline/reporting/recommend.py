"""Per target, the file to ship: the fastest exported file (p50, with its per-process range) whose
accuracy on that target is not shown to fall more than `export.max_int8_drop` below the teacher's fp32
file there, and that fits the budgets when a budgets file is given; with the runner-up and why it lost.

Accuracy is judged with the paired rule of `edgekd.paired` on the two files' per-sample results: a file
whose drop is beyond the limit is excluded; one the eval set cannot tell apart from the limit stays
eligible and is shipped with that said, never silently. Point estimates are never compared with the limit.

Every number comes from the target's own results: on x86 an int8 CNN can be slower than its fp32
file while on ARM it is usually faster, so no rule of thumb is applied.
"""
from __future__ import annotations

from edgekd.paired import PairedDrop, judge_accuracies, judge_rows
from edgekd.pipeline.console import fmt_ms, fmt_pct


def _teacher_reference(rows: list[dict], artifacts: dict[str, dict], models: dict) -> dict:
    """The teacher's fp32 file on this target (the most accurate, fastest first), else its PyTorch row
    there, else a stand-in row holding its PyTorch accuracy on the host."""
    fp32 = [r for r in rows if artifacts.get(r["artifact"], {}).get("model") == "teacher"
            and artifacts[r["artifact"]].get("precision") == "fp32"]
    eager = [r for r in rows if r["artifact"] == "teacher.pt"]
    if fp32 or eager:
        return max(fp32 or eager, key=lambda r: (r["accuracy"], -r["latency_ms"]["p50"]))
    return {"artifact": "teacher (PyTorch on the host; no teacher file measured on this target)",
            "accuracy": models["teacher"]["accuracy"], "n_eval": None}


def _judge(reference: dict, row: dict, max_drop: float) -> PairedDrop | str:
    """The paired verdict, or why there is none (the two were scored on different eval sets)."""
    if reference["n_eval"] is None:  # no teacher row on this target: unpaired against the host accuracy
        return judge_accuracies(reference["accuracy"], row["accuracy"], row["n_eval"], max_drop)
    try:
        return judge_rows(reference, row, max_drop)
    except ValueError as exc:
        return f"cannot be compared with the teacher's {reference['artifact']}: {exc}"


def _against_fastest_teacher(rows: list[dict], artifacts: dict[str, dict], ship: dict) -> dict | None:
    """What shipping the teacher's fastest exported file on this target would cost instead of `ship`."""
    teacher = [r for r in rows if artifacts.get(r["artifact"], {}).get("model") == "teacher"]
    if not teacher:
        return None
    fastest = min(teacher, key=lambda r: r["latency_ms"]["p50"])
    return {"file": fastest["artifact"], "p50_ms": fastest["latency_ms"]["p50"],
            "size_bytes": artifacts[fastest["artifact"]]["size_bytes"],
            "speedup": fastest["latency_ms"]["p50"] / ship["latency_ms"]["p50"],
            "size_ratio": artifacts[fastest["artifact"]]["size_bytes"] / artifacts[ship["artifact"]]["size_bytes"]}


def recommend(report: dict, max_drop: float, budget_fails: set[tuple[str, str]] = frozenset()) -> dict[str, dict]:
    """{target: {ship, runner_up, why, excluded, reference, accuracy_check}} from the report's results.

    `budget_fails` holds (target, artifact) pairs some budget failed; those files are not shipped.
    """
    artifacts = {a["file"]: a for a in report["artifacts"]}
    by_target: dict[str, list[dict]] = {}
    for r in report["results"]:
        if r.get("accuracy") is not None:
            by_target.setdefault(r["target"], []).append(r)
    out = {}
    for target, rows in by_target.items():
        reference = _teacher_reference(rows, artifacts, report["models"])
        eligible, excluded = [], []
        for r in sorted((r for r in rows if r["artifact"] in artifacts), key=lambda r: r["latency_ms"]["p50"]):
            label = r["artifact"] + (f" ({r['threads']} threads)" if r.get("threads", 1) != 1 else "")
            check = _judge(reference, r, max_drop)
            if isinstance(check, str):
                excluded.append({"artifact": label, "why": check})
            elif check.verdict == "fail":
                excluded.append({"artifact": label, "why": f"accuracy {fmt_pct(r['accuracy'])} vs the teacher's fp32 "
                                                           f"{fmt_pct(reference['accuracy'])}: {check.describe()}"})
            elif (target, r["artifact"]) in budget_fails:
                excluded.append({"artifact": label, "why": "breaks a budget (see edgekd gate)"})
            else:
                eligible.append((label, r, check))
        entry = {"reference": {"accuracy": reference["accuracy"], "file": reference["artifact"], "max_drop": max_drop},
                 "excluded": excluded, "ship": None, "runner_up": None,
                 "why": "no file qualifies" if not eligible else ""}
        if eligible:
            (name, best, check), *rest = eligible
            entry.update(ship=name, p50_ms=best["latency_ms"]["p50"], accuracy=best["accuracy"],
                         accuracy_check=check.to_dict(), accuracy_note=check.describe(),
                         throttled=bool(best.get("thermal", {}).get("throttled")))
            entry["against_teacher_fastest"] = _against_fastest_teacher(rows, artifacts, best)
            if rest:
                second_name, second, _ = rest[0]
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
    """The target's answer, first: which file to ship, what it costs against the teacher, and why."""
    rec = recommendations.get(target)
    if not rec:
        return []
    ref = rec["reference"]
    if not rec["ship"]:
        lines = [f"**File to ship on `{target}`: none qualifies** (within {100 * ref['max_drop']:.2f} pts of the "
                 f"teacher's fp32 accuracy {fmt_pct(ref['accuracy'])})."]
    else:
        lines = [f"**File to ship on `{target}`: {rec['ship']}** — p50 {fmt_ms(rec['p50_ms'])}"
                 f"{' (measured while throttled)' if rec.get('throttled') else ''}, accuracy {fmt_pct(rec['accuracy'])}."]
        other = rec.get("against_teacher_fastest")
        if other and other["file"] != rec["ship"]:
            lines.append(f"Against the teacher's fastest file ({other['file']}, p50 {fmt_ms(other['p50_ms'])}, "
                         f"{other['size_bytes'] / 1024:,.1f} KiB) it is {other['speedup']:.1f}x faster and "
                         f"{other['size_ratio']:.1f}x smaller.")
        lines.append(f"Accuracy against the teacher's fp32 {fmt_pct(ref['accuracy'])} ({ref['file']}): "
                     f"{rec['accuracy_note']}.")
        if rec["runner_up"]:
            lines.append(f"Runner-up: {rec['why']}.")
    lines += [f"Not eligible: {e['artifact']}: {e['why']}." for e in rec["excluded"][:5]]
    return lines
