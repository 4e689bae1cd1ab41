"""The report's figures, drawn from the rows `markdown.rows` derives: per target the accuracy–latency
front (every file, with its per-process p50 range and its accuracy's 95 % interval, the front, the
accuracy limit and the file to ship) and the latency distributions; one size chart for the run.

Colour says which model a point is, the marker which format and precision: every file is one
(colour, marker) pair, so no point needs a text label beside it, and labels cannot collide. Only
the shipped file and the teacher's fastest file are named on the plot.
"""
from __future__ import annotations

import io

from edgekd.paired import wilson
from edgekd.pipeline.console import fmt_ms

MODEL_COLOURS = {"teacher": "#d62728", "student": "#1f77b4", "baseline": "#7f7f7f"}
OTHER_COLOURS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
MARKERS = {("onnx", "fp32"): "o", ("onnx", "int8"): "s", ("tflite", "fp32"): "^", ("tflite", "fp16"): "v",
           ("tflite", "int8"): "D", ("pte", "fp32"): "P", ("pte", "int8"): "X", ("pytorch", "fp32"): "*"}
OTHER_MARKERS = ("h", "p", "<", ">", "8", "d")


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated by another (lower latency and higher accuracy is better)."""
    front = []
    for i, (lat, acc) in enumerate(points):
        if not any((l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc) for l2, a2 in points):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes (110 dpi, tight); the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _plain_log_axis(axis, values: list[float], unit_ms: bool = True) -> None:
    """A log axis labelled 5 µs, 10 µs, 20 µs, ... (1-2-5 steps) instead of 10⁻² style ticks that overlap."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    lo, hi = min(values), max(values)
    ticks, decade = [], 10.0 ** int(f"{lo:e}".split("e")[1])
    while decade <= hi * 10:
        ticks += [decade * m for m in (1, 2, 5) if lo / 1.6 <= decade * m <= hi * 1.6]
        decade *= 10
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _: _tick(v) if unit_ms else f"{v:,.0f}"))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def _tick(ms: float) -> str:
    """A 1-2-5 tick needs no decimals: "20 µs", "1 ms"."""
    text = fmt_ms(ms)
    number, unit = text.split(" ")
    return f"{float(number):g} {unit}"


def _styles(lines: list[dict]) -> tuple[dict, dict]:
    models = sorted({r["model"] for r in lines} - set(MODEL_COLOURS))
    colours = {**MODEL_COLOURS, **dict(zip(models, OTHER_COLOURS * 9))}
    kinds = sorted({(r["format"], r["precision"]) for r in lines} - set(MARKERS))
    return colours, {**MARKERS, **dict(zip(kinds, OTHER_MARKERS * 9))}


def front_plot(target: str, lines: list[dict], rec: dict | None):
    """Accuracy (%) against p50 on `target`: every measured file, the front, the limit, the file to ship."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    colours, markers = _styles(lines)
    fig, ax = plt.subplots(figsize=(9, 5))
    for r in lines:
        n = r.get("n_eval") or 0
        lo, hi = wilson(round(r["accuracy"] * n), n) if n else (r["accuracy"], r["accuracy"])
        # the pooled p50 (an equal number of samples from each process) can sit a few ns outside the
        # range of the processes' own medians (all their samples), and matplotlib refuses negative bars
        ax.errorbar(r["p50"], 100 * r["accuracy"],
                    xerr=[[max(0.0, r["p50"] - r["ci"][0])], [max(0.0, r["ci"][1] - r["p50"])]],
                    yerr=[[100 * (r["accuracy"] - lo)], [100 * (hi - r["accuracy"])]],
                    fmt=markers[(r["format"], r["precision"])], color=colours[r["model"]], ms=8, mec="black",
                    mew=0.5, elinewidth=0.8, capsize=2, alpha=0.9)
    pts = [(r["p50"], r["accuracy"]) for r in lines]
    front = pareto(pts)
    ax.plot([pts[i][0] for i in front], [100 * pts[i][1] for i in front], ls="--", color="black", lw=1, zorder=0)
    handles = [Line2D([], [], ls="--", color="black", lw=1, label="front (nothing faster is as accurate)")]
    if rec:
        limit = 100 * (rec["reference"]["accuracy"] - rec["reference"]["max_drop"])
        ax.axhline(limit, color="#d62728", lw=1, ls=":")
        handles.append(Line2D([], [], color="#d62728", lw=1, ls=":",
                              label=f"limit: teacher {100 * rec['reference']['accuracy']:.2f}% "
                                    f"− {100 * rec['reference']['max_drop']:.2f} pts"))
        _name_points(ax, lines, rec)
    handles += [Line2D([], [], ls="", marker="o", color=c, ms=8, label=m) for m, c in colours.items()
                if any(r["model"] == m for r in lines)]
    handles += [Line2D([], [], ls="", marker=mk, color="white", mec="black", ms=8, label=f"{f} {p}")
                for (f, p), mk in markers.items() if any((r["format"], r["precision"]) == (f, p) for r in lines)]
    ax.set_xscale("log")
    _plain_log_axis(ax.xaxis, [v for r in lines for v in (r["ci"][0], r["ci"][1])])
    ax.set_xlabel("p50 latency per inference (batch 1; bars: range of per-process medians)")
    ax.set_ylabel("accuracy, % (bars: 95 % interval)")
    ax.set_title(f"accuracy vs latency on {target}", pad=12)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    return fig


def _name_points(ax, lines: list[dict], rec: dict) -> None:
    """Ring and name the shipped file, and name the teacher's fastest file, on opposite sides."""
    by_name = {r["artifact"]: r for r in lines}
    ship = by_name.get((rec.get("ship") or "").split(" (")[0])
    teacher_files = [r for r in lines if r["model"] == "teacher" and r["format"] != "pytorch"]
    fastest = min(teacher_files, key=lambda r: r["p50"]) if teacher_files else None
    if ship is not None:
        ax.scatter(ship["p50"], 100 * ship["accuracy"], s=380, facecolors="none", edgecolors="#2ca02c",
                   linewidths=2, zorder=5)
    named = [(ship, "ship: ", (12, -28))] + ([(fastest, "teacher's fastest: ", (12, 16))] if fastest is not ship else [])
    for row, text, offset in named:
        if row is None:
            continue
        xy = (row["p50"], 100 * row["accuracy"])
        ax.annotate(text + row["artifact"].removeprefix("export/"), xy, xytext=offset, textcoords="offset points",
                    fontsize=8, arrowprops={"arrowstyle": "-", "color": "0.4", "lw": 0.6},
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.7", "lw": 0.5})


def latency_plot(target: str, lines: list[dict]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.35 * len(lines) + 1.2))
    data = [r["samples"] or [r["p50"]] for r in lines]
    ax.boxplot(data, orientation="horizontal", showfliers=False,
               tick_labels=[r["artifact"].removeprefix("export/") for r in lines])
    ax.set_xscale("log")
    _plain_log_axis(ax.xaxis, [v for d in data for v in (min(d), max(d))])
    ax.set_xlabel("latency per inference (whiskers 1.5 IQR, outliers hidden)")
    ax.set_title(f"latency distributions on {target}")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def size_plot(lines: list[dict]):
    import matplotlib.pyplot as plt

    colours, _ = _styles(lines)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(lines) + 1.2))
    kib = [r["size_bytes"] / 1024 for r in lines]
    ax.barh([r["artifact"].removeprefix("export/") for r in lines], kib, color=[colours[r["model"]] for r in lines])
    ax.set_xscale("log")
    _plain_log_axis(ax.xaxis, kib, unit_ms=False)
    ax.set_xlabel("size, KiB (.pt rows: fp32 weights)")
    ax.set_title("size per file")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def plots(table: dict[str, list[dict]], recommendations: dict[str, dict]) -> dict[str, bytes]:
    """{file name under plots/: PNG bytes}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = {}
    for target, lines in table.items():
        figures[front_name(target)] = front_plot(target, lines, recommendations.get(target))
        figures[f"latency_{target}.png"] = latency_plot(target, lines)
    first = next(iter(table.values()), [])
    if first:
        figures["sizes.png"] = size_plot(first)
    out = {}
    for name, fig in figures.items():
        out[name] = png_bytes(fig)
    return out


def front_name(target: str) -> str:
    return f"pareto_{target}.png"
