"""Gate verdicts as a table, JUnit XML (one test case per rule, target and artifact) and JSON."""
from __future__ import annotations

import dataclasses
import json
import math
import xml.etree.ElementTree as ET

from rich.table import Table

from edgekd.pipeline.console import fmt_ms
from edgekd.pipeline.reporting.gate import Verdict

_UNITS = {"max_size_kb": " KiB", "max_peak_rss_mb": " MB"}
_LATENCY = ("max_p50_ms", "max_p95_ms", "max_p99_ms")
_POINTS = ("max_accuracy_drop", "max_accuracy_decrease")  # differences of two accuracies


def _fmt(rule: str, value: float, margin: bool = False) -> str:
    """A budget, measured value or margin in the unit a reader expects: an accuracy in %, a difference of
    accuracies (and an accuracy's margin) in points, a latency in µs or ms, a relative increase in %."""
    if math.isnan(value):
        return "-"  # not measured
    if rule in _POINTS or (rule == "min_accuracy" and margin):
        return f"{100 * value:{'+' if margin else ''}.2f} pts"
    if rule in ("min_accuracy", "max_latency_increase"):
        return f"{100 * value:{'+' if margin else ''}.2f}" + (" pts" if margin else "%")
    if rule in _LATENCY:
        return ("+" if margin and value >= 0 else "-" if margin else "") + fmt_ms(abs(value) if margin else value)
    return f"{value:{'+' if margin else ''}.4g}{_UNITS.get(rule, '')}"


def _measured(v: Verdict) -> str:
    text = _fmt(v.rule, v.measured)
    if v.ci:
        text += f" (95% CI {_fmt(v.rule, v.ci[0])}..{_fmt(v.rule, v.ci[1])})"
    return text


def table(verdicts: list[Verdict]) -> Table:
    out = Table(title="edgekd gate")
    for col in ("rule", "target", "artifact", "budget", "measured", "margin", "verdict"):
        out.add_column(col, justify="right" if col in ("budget", "margin") else "left")
    colour = {"pass": "green", "fail": "bold red", "inconclusive": "yellow"}
    for v in verdicts:
        out.add_row(v.rule, v.target, v.artifact, _fmt(v.rule, v.budget), _measured(v), _fmt(v.rule, v.margin, True),
                    f"[{colour[v.status]}]{v.status.upper()}[/]")
    return out


def notes(verdicts: list[Verdict]) -> list[str]:
    """One line per verdict that carries an explanation (why it is inconclusive and what would decide it)."""
    return [f"{v.rule} {v.artifact} on {v.target}: {v.note}" for v in verdicts if v.note]


def summary_line(verdicts: list[Verdict]) -> str:
    counts = {s: sum(v.status == s for v in verdicts) for s in ("pass", "fail", "inconclusive")}
    return f"{counts['pass']} passed, {counts['fail']} failed, {counts['inconclusive']} inconclusive"


def junit_xml(verdicts: list[Verdict]) -> str:
    suite = ET.Element("testsuite", name="edgekd.gate", tests=str(len(verdicts)),
                       failures=str(sum(v.status == "fail" for v in verdicts)), errors="0",
                       skipped=str(sum(v.status == "inconclusive" for v in verdicts)), time="0")
    for v in verdicts:
        case = ET.SubElement(suite, "testcase", classname=f"edgekd.gate.{v.target}", name=f"{v.rule} {v.artifact}",
                             time="0")
        message = f"{v.rule}: measured {_measured(v)}, budget {_fmt(v.rule, v.budget)}"
        if v.status == "fail":
            ET.SubElement(case, "failure", message=message, type=v.rule).text = message
        elif v.status == "inconclusive":
            ET.SubElement(case, "skipped", message="inconclusive: " + message + (f"; {v.note}" if v.note else ""))
    root = ET.Element("testsuites", tests=suite.get("tests"), failures=suite.get("failures"), errors="0",
                      skipped=suite.get("skipped"))
    root.append(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def verdicts_json(verdicts: list[Verdict], code: int) -> str:
    return json.dumps({"schema": "edgekd.gate/1", "exit_code": code, "summary": summary_line(verdicts),
                       "verdicts": [dataclasses.asdict(v) for v in verdicts]}, indent=2)
