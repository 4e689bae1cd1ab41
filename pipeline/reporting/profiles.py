"""report.md's "Where the time goes": the op profiles `edgekd bench --profile` recorded, per target.

Per file: the top ops by time, the ops that ran outside the XNNPACK delegate (.pte, .tflite on LiteRT), and for each
int8 file slower than its fp32 sibling (same model, runtime and threads) the kinds of op that take
longer in it, or exist only in it. Profiles come from their own processes: profilers add time per op
(ONNX Runtime's a few µs per kernel), so a file's shares tell more than its sums, and the sums are
shown against the timed p50 so that a reader sees how far off they are.
"""
from __future__ import annotations

import re
from collections import defaultdict

from edgekd.pipeline.console import fmt_ms

TOP = 3
XNNPACK_RUNTIMES = ("executorch", "ai_edge_litert")  # their profiles name the ops outside the XNNPACK delegate

# onnxruntime's quantized and layout-specialised kernels, and XNNPACK's operator names
# ("Convolution (NHWC, QC8) IGEMM"), named as the kind of work they do, so that the ops of an int8
# file line up with those of its fp32 sibling
_ORT_KIND = re.compile(r"^(?:QLinear|Nhwc|Fused|Q(?=[A-Z][a-z]))")


def op_kind(op: str) -> str:
    """The kind of work an op does: "QLinearConv" -> "Conv", "QGemm" and "FusedGemm" -> "Gemm",
    "Convolution (NHWC, QC8) IGEMM" -> "Convolution"; QuantizeLinear and the like stay themselves."""
    if op in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"):
        return op
    return _ORT_KIND.sub("", op.split(" (")[0]).strip()


def _us(v: float) -> str:
    return fmt_ms(v / 1e3)


def by_kind(profile: dict) -> dict[str, float]:
    kinds: dict[str, float] = defaultdict(float)
    for op in profile.get("ops", []):
        kinds[op_kind(op["op"])] += op["us"]
    return dict(kinds)


def slower_int8_lines(profiled: list[dict]) -> list[str]:
    """For each int8 row slower than its fp32 sibling: the op kinds that take longer, largest first."""
    fp32 = {(r["model"], r["runtime"], r["threads"]): r for r in profiled if r["precision"] == "fp32"}
    out = []
    for r in profiled:
        base = fp32.get((r["model"], r["runtime"], r["threads"]))
        if r["precision"] != "int8" or base is None or r["p50"] <= base["p50"]:
            continue
        mine, theirs = by_kind(r["op_profile"]), by_kind(base["op_profile"])
        growth = {k: us - theirs.get(k, 0.0) for k, us in mine.items()}
        # growth under 0.05 µs prints as +0.0: XNNPACK's 1 µs ticks, not a finding
        grew = sorted(((k, d) for k, d in growth.items() if d >= 0.05), key=lambda kv: -kv[1])
        what = "; ".join(f"{k} {_us(theirs[k]) if k in theirs else 'absent'} → {_us(mine[k])} (+{_us(d)})"
                         for k, d in grew[:TOP]) or "no op kind takes longer: the extra time is outside the ops"
        overlap = r["ci"][0] <= base["ci"][1]
        out.append(f"- `{r['artifact']}` p50 {fmt_ms(r['p50'])} vs `{base['artifact']}` {fmt_ms(base['p50'])}"
                   f"{' (per-process ranges overlap: cannot tell it is slower)' if overlap else ''}; "
                   f"per op kind, fp32 → int8: {what}.")
    return out


def _row(r: dict) -> str:
    prof = r["op_profile"]
    total = sum(op["us"] for op in prof["ops"]) or float("nan")
    ops = sorted(prof["ops"], key=lambda op: -op["us"])
    top = ", ".join(f"{op['name']} {100 * op['us'] / total:.0f} %" for op in ops[:TOP])
    delegate = (f" (XNNPACK delegate {_us(prof['delegate_call_us'])})" if prof.get("delegate_call_us") else "")
    return (f"| {r['artifact']} | {fmt_ms(r['p50'])} | {_us(prof['profiled_run_us'])}{delegate} | "
            f"{_us(total)} ({total / (1e3 * r['p50']):.2f}× p50) | {top} |")


def profile_lines(table: dict[str, list[dict]]) -> list[str]:
    """The section, from markdown.rows(report) (rows carry `op_profile` when one was recorded)."""
    out: list[str] = []
    for target, rows in table.items():
        with_profile = [r for r in rows if r.get("op_profile")]
        if not with_profile:
            continue
        profiled = [r for r in with_profile if r["op_profile"].get("profiler") and r["op_profile"].get("ops")]
        out += ["", f"## Where the time goes on `{target}` (op profiles)", "",
                "Each file was profiled by its runtime's own profiler in one more process, after the timed ones. "
                "Profilers distort: ONNX Runtime's adds time to every kernel (its profiled run is longer than the "
                "timed p50); LiteRT's reads the process's memory use at the start and end of every run, which "
                "lengthens the profiled run but not its ops; and the XNNPACK delegate (in LiteRT and ExecuTorch) "
                "reports each op in whole microseconds, so ops under 1 µs often read 0 and the ops' sum falls "
                "short of the run. Read the shares (of the sum of the ops); the sum is shown against the timed "
                "p50 so that you see how far off it is.", ""]
        if profiled:
            out += ["| file | p50 (timed) | profiled run | sum of ops (vs p50) | top ops (share) |",
                    "|---|---:|---:|---:|---|"] + [_row(r) for r in profiled]
        outside = {r["artifact"]: [op["name"] for op in r["op_profile"]["ops"] if op["name"].endswith("(not delegated)")]
                   for r in profiled if r["runtime"] in XNNPACK_RUNTIMES}
        if outside:
            out += [""] + [f"- `{name}`: " + (", ".join(ops) + " ran outside the XNNPACK delegate." if ops else
                                               "every op ran inside the XNNPACK delegate.")
                           for name, ops in outside.items()]
        slower = slower_int8_lines(profiled)
        if slower:
            out += ["", "int8 files slower than their fp32 file, and the op kinds that take longer in them:", ""] + slower
        none = [r for r in with_profile if r not in profiled]
        if none:
            out += [""] + [f"- `{r['artifact']}`: no op profile ({r['op_profile'].get('why', 'no ops recorded')})."
                           for r in none]
    return out
