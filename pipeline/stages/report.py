"""The report stage: report.json, report.md and report.html from the run's records and bench results."""
from __future__ import annotations

from edgekd.pipeline.reporting.report import write_report
from edgekd.pipeline.stages.context import StageContext, StageResult


def report_stage(ctx: StageContext) -> StageResult:
    return StageResult(write_report(ctx.layout, standalone=False))
