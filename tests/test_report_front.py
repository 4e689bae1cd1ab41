"""The report's answer per target: the file to ship, what the teacher's fastest file would cost instead,
and the accuracy–latency plot with its front, limit and shipped file; HTML without literal Markdown."""
import numpy as np
import pytest

from edgekd.pipeline.console import fmt_points
from edgekd.pipeline.reporting.html import _md_to_html
from edgekd.pipeline.reporting.markdown import markdown
from edgekd.pipeline.reporting.plots import _tick, front_plot, pareto
from edgekd.pipeline.reporting.recommend import markdown_lines, recommend

N = 1000


def _bits(wrong: list[int]) -> str:
    correct = np.ones(N, bool)
    correct[wrong] = False
    return np.packbits(correct).tobytes().hex()


def _row(artifact: str, p50_us: float, wrong: list[int]) -> dict:
    ms = p50_us / 1000
    return {"artifact": artifact, "target": "local", "accuracy": 1 - len(wrong) / N, "n_eval": N, "threads": 1,
            "correct_bits": _bits(wrong), "runtime": "ai_edge_litert", "peak_rss_mb": 50.0,
            "latency_ms": {"p50": ms, "p95": ms * 1.1, "p50_ci95": [ms * 0.97, ms * 1.03]}}


def _artifact(file: str, model: str, fmt: str, precision: str, size: int) -> dict:
    return {"file": file, "model": model, "format": fmt, "precision": precision, "size_bytes": size,
            "audit": {"kind": "float", "weight_dtypes": ["float32"], "activation_dtypes": ["float32"],
                      "input_dtype": "float32", "granularity": None, "op_count": 8}}


@pytest.fixture
def report() -> dict:
    teacher_wrong = list(range(18))  # 98.2 %
    student_wrong = list(range(20)) + [500, 501]  # 97.8 %: 4 lost, 0 gained against the teacher
    return {
        "run": {"name": "t"}, "dataset": {"name": "d", "n_train": 1, "n_test": N, "input_shape": [1, 8, 8],
                                          "num_classes": 10},
        "models": {"teacher": {"arch": "cnn", "params": 421_738, "macs": 4_241_152, "accuracy": 0.982},
                   "student": {"arch": "cnn", "params": 26_722, "macs": 307_648, "accuracy": 0.978}},
        "artifacts": [_artifact("export/teacher.tflite", "teacher", "tflite", "fp32", 1_691_000),
                      _artifact("export/teacher.int8.tflite", "teacher", "tflite", "int8", 432_900),
                      _artifact("export/student.int8.tflite", "student", "tflite", "int8", 33_500)],
        "results": [_row("export/teacher.tflite", 49.0, teacher_wrong),
                    _row("export/teacher.int8.tflite", 17.2, teacher_wrong),
                    _row("export/student.int8.tflite", 5.7, student_wrong)]}


def test_the_answer_says_what_the_teachers_fastest_file_would_cost(report):
    rec = recommend(report, 0.01)["local"]
    assert rec["ship"] == "export/student.int8.tflite"
    other = rec["against_teacher_fastest"]
    assert other["file"] == "export/teacher.int8.tflite"
    assert other["speedup"] == pytest.approx(17.2 / 5.7) and other["size_ratio"] == pytest.approx(432_900 / 33_500)
    assert rec["accuracy_check"]["lost"] == 4 and rec["accuracy_check"]["gained"] == 0
    lines = markdown_lines({"local": rec}, "local")
    assert "it is 3.0x faster and 12.9x smaller" in lines[1]
    assert lines[2].startswith("Accuracy against the teacher's fp32 98.20% (export/teacher.tflite): -0.40 pts")


def test_the_target_section_opens_with_the_plot_and_the_answer_and_html_shows_no_markdown(report):
    report["recommendations"] = recommend(report, 0.01)
    md = markdown(report)
    section = md[md.index("## Target `local`"):]
    assert section.index("![accuracy vs p50 on local](plots/pareto_local.png)") < section.index("File to ship") \
        < section.index("| artifact |")
    page = _md_to_html(md, {"pareto_local.png": b"PNG"})
    assert "**" not in page and "<strong>File to ship on <code>local</code>: export/student.int8.tflite</strong>" in page
    assert page.count("data:image/png;base64,UE5H") == 1  # b"PNG", embedded where the Markdown puts it
    assert "-0.00" not in md and "| 0.00 pts |" in md  # the teacher's own rows


def test_the_plot_marks_the_front_the_limit_and_the_shipped_file(report):
    import matplotlib

    matplotlib.use("Agg")
    from edgekd.pipeline.reporting.markdown import rows

    rec = recommend(report, 0.01)["local"]
    fig = front_plot("local", rows(report)["local"], rec)
    ax = fig.axes[0]
    limit = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert len(limit) == 1 and limit[0].get_ydata()[0] == pytest.approx(97.2)
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["ship: student.int8.tflite", "teacher's fastest: teacher.int8.tflite"]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["5 µs", "10 µs", "20 µs", "50 µs"]


def test_a_p50_just_outside_its_process_range_still_plots(report):
    """The pooled p50 takes as many samples from each process as the shortest has; the processes'
    medians take all of theirs, so the pooled one can fall 60 ns below their range (seen in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    from edgekd.pipeline.reporting.markdown import rows

    report["results"][2]["latency_ms"]["p50_ci95"] = [0.00576, 0.0066]  # p50 is 0.0057
    fig = front_plot("local", rows(report)["local"], recommend(report, 0.01)["local"])
    assert [t.get_text() for t in fig.axes[0].texts][0] == "ship: student.int8.tflite"


def test_plain_units_and_points():
    assert [_tick(v) for v in (0.005, 0.02, 1.0, 20.0)] == ["5 µs", "20 µs", "1 ms", "20 ms"]
    assert fmt_points(-0.00001) == "0.00 pts" and fmt_points(-0.011) == "-1.10 pts"
    assert pareto([(1, 0.95), (2, 0.9), (3, 0.99), (3, 0.99)]) == [0, 2, 3]
