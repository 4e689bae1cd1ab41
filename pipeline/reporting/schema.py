"""The shapes of the JSON files edgekd reads back: agent results (bench/<target>.json, `report --add`)
and report.json (`gate`). Each check returns every problem at once, so malformed input is refused
with one message (exit 2) before anything is acted on or written."""
from __future__ import annotations

import math
import re

RESULT_SCHEMA, BENCH_SCHEMA, REPORT_SCHEMA = "edgekd.result/1", "edgekd.bench/1", "edgekd.report/1"
TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # becomes a file name: bench/<target>.json
SHA256 = re.compile(r"^[0-9a-f]{64}$")
HEX = re.compile(r"^[0-9a-f]*$")


def _number(value, low: float | None = None, high: float | None = None) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def _check(problems: list[str], where: str, ok: bool, what: str) -> None:
    if not ok:
        problems.append(f"{where}: {what}")


def latency_problems(lat, where: str) -> list[str]:
    p: list[str] = []
    if not isinstance(lat, dict):
        return [f"{where}.latency_ms: expected an object with p50, p95, p99 and p50_ci95"]
    _check(p, f"{where}.latency_ms.p50", _number(lat.get("p50"), 0), f"expected a number of ms >= 0, got {lat.get('p50')!r}")
    for key in ("p95", "p99"):  # null where the measuring tool prints no such percentile
        _check(p, f"{where}.latency_ms.{key}", lat.get(key) is None or _number(lat.get(key), 0),
               f"expected a number of ms >= 0 or null, got {lat.get(key)!r}")
    ci = lat.get("p50_ci95")
    _check(p, f"{where}.latency_ms.p50_ci95", isinstance(ci, list) and len(ci) == 2 and all(_number(v, 0) for v in ci),
           f"expected [low, high] in ms, got {ci!r}")
    medians = lat.get("process_p50")
    if medians is not None:
        _check(p, f"{where}.latency_ms.process_p50", isinstance(medians, list) and medians
               and all(_number(v) and v > 0 for v in medians), f"expected a list of positive ms, got {medians!r}")
    return p


def result_problems(r, where: str, need_sha: bool) -> list[str]:
    """Problems of one result row (an agent measurement of one file on one target)."""
    if not isinstance(r, dict):
        return [f"{where}: expected an object, got {type(r).__name__}"]
    p: list[str] = []
    _check(p, f"{where}.artifact", isinstance(r.get("artifact"), str) and r.get("artifact"), "expected a file name")
    _check(p, f"{where}.target", isinstance(r.get("target"), str) and bool(TARGET_NAME.match(r.get("target", ""))),
           f"expected a target name of letters, digits and . _ -, got {r.get('target')!r}")
    if need_sha:
        _check(p, f"{where}.sha256", isinstance(r.get("sha256"), str) and bool(SHA256.match(r.get("sha256", ""))),
               "expected the sha256 of the measured file (64 hex digits); re-measure with this run's bench/agent.py")
    p += latency_problems(r.get("latency_ms"), where)
    if r.get("accuracy") is None and "accuracy" in r:
        p.append(f"{where}.accuracy: null, measured without an eval set; run the agent with --eval data/eval.npz")
    else:
        _check(p, f"{where}.accuracy", _number(r.get("accuracy"), 0, 1), f"expected a fraction in [0, 1], got {r.get('accuracy')!r}")
    _check(p, f"{where}.n_eval", isinstance(r.get("n_eval"), int) and not isinstance(r.get("n_eval"), bool)
           and r.get("n_eval") > 0, f"expected a positive integer, got {r.get('n_eval')!r}")
    _check(p, f"{where}.peak_rss_mb", r.get("peak_rss_mb") is None or _number(r.get("peak_rss_mb"), 0),
           f"expected MB >= 0, or null where the tool measured none, got {r.get('peak_rss_mb')!r}")
    samples = r.get("samples_ms")
    _check(p, f"{where}.samples_ms", samples is None or (isinstance(samples, list) and all(_number(v, 0) for v in samples)),
           f"expected a list of ms >= 0, got {str(samples)[:40]!r}")
    peaks = r.get("process_peak_rss_mb")
    _check(p, f"{where}.process_peak_rss_mb", peaks is None or (isinstance(peaks, list) and all(
           v is None or _number(v, 0) for v in peaks)), f"expected a list of MB >= 0 (or null), got {str(peaks)[:40]!r}")
    bits, n = r.get("correct_bits"), r.get("n_eval")
    if bits is not None and isinstance(n, int) and n > 0:
        _check(p, f"{where}.correct_bits", isinstance(bits, str) and bool(HEX.match(bits)) and len(bits) == 2 * ((n + 7) // 8),
               f"expected {(n + 7) // 8} bytes as hex (one bit per eval sample), got {str(bits)[:40]!r}")
    return p


def bench_file_problems(blob) -> tuple[list[dict], list[dict], list[str]]:
    """(results, skipped rows, problems) of an agent output: one result or a bench file."""
    if not isinstance(blob, dict):
        return [], [], [f"expected a JSON object written by bench/agent.py, got {type(blob).__name__}"]
    schema = blob.get("schema")
    if schema == RESULT_SCHEMA:
        results, skipped = [blob], []
    elif schema == BENCH_SCHEMA:
        results, skipped = blob.get("results"), blob.get("skipped", [])
    else:
        return [], [], [f"schema {schema!r}; expected {BENCH_SCHEMA!r} or {RESULT_SCHEMA!r} (written by bench/agent.py)"]
    if not isinstance(results, list):
        return [], [], [f"results: expected a list, got {type(results).__name__}"]
    problems = [p for i, r in enumerate(results) for p in result_problems(r, f"results[{i}]", need_sha=True)]
    if not isinstance(skipped, list) or not all(isinstance(s, dict) and isinstance(s.get("artifact"), str)
                                                and isinstance(s.get("reason"), str) for s in skipped):
        problems.append("skipped: expected a list of {artifact, reason}")
        skipped = []
    return results, skipped, problems


def report_problems(blob) -> list[str]:
    """Problems of a report.json given to the gate."""
    if not isinstance(blob, dict):
        return [f"expected a JSON object (report.json), got {type(blob).__name__}"]
    if blob.get("schema") != REPORT_SCHEMA:
        return [f"schema {blob.get('schema')!r}, expected {REPORT_SCHEMA!r}; pass the report.json `edgekd report` wrote"]
    p: list[str] = []
    results, artifacts = blob.get("results"), blob.get("artifacts", [])
    if not isinstance(results, list):
        return [f"results: expected a list, got {type(results).__name__}"]
    p += [q for i, r in enumerate(results) for q in result_problems(r, f"results[{i}]", need_sha=False)]
    if not isinstance(artifacts, list):
        return p + [f"artifacts: expected a list, got {type(artifacts).__name__}"]
    for i, a in enumerate(artifacts):
        if not isinstance(a, dict) or not isinstance(a.get("file"), str) or not _number(a.get("size_bytes"), 0):
            p.append(f"artifacts[{i}]: expected an object with file and size_bytes")
    return p
