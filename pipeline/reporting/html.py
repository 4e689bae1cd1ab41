"""report.html: one self-contained file (plots embedded as PNG data URIs, no external URL) + plots/*.png."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from edgekd.fileio import write_bytes, write_text


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated by another (lower latency and higher accuracy is better)."""
    front = []
    for i, (lat, acc) in enumerate(points):
        if not any((l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc) for l2, a2 in points):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _plots(table: dict[str, list[dict]]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    for target, lines in table.items():
        fig, ax = plt.subplots(figsize=(9, 4.5))
        pts = [(r["p50"], r["accuracy"]) for r in lines]
        # numbers beside the points and the names in the legend: files of one model often sit on top
        # of each other, and their names would overlap
        for i, r in enumerate(lines, 1):
            ax.scatter(r["p50"], 100 * r["accuracy"], s=40, label=f"{i}  {r['artifact'].removeprefix('export/')}")
            ax.annotate(str(i), (r["p50"], 100 * r["accuracy"]), fontsize=8, xytext=(4, 3 + 7 * (i % 3)),
                        textcoords="offset points")
        front = pareto(pts)
        ax.plot([pts[i][0] for i in front], [100 * pts[i][1] for i in front], "r--", lw=1, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel("p50 latency, ms (log scale, batch 1)")
        ax.set_ylabel("accuracy, %")
        ax.set_title(f"accuracy vs latency on {target}")
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False)
        out[f"pareto_{target}.png"] = _png(fig)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(7, 0.35 * len(lines) + 1.2))
        ax.boxplot([[s for s in r["samples"]] or [r["p50"]] for r in lines], orientation="horizontal", showfliers=False,
                   tick_labels=[r["artifact"].removeprefix("export/") for r in lines])
        ax.set_xscale("log")
        ax.set_xlabel("latency per inference, ms (log scale; whiskers 1.5 IQR, outliers hidden)")
        ax.set_title(f"latency distributions on {target}")
        out[f"latency_{target}.png"] = _png(fig)
        plt.close(fig)
    first = next(iter(table.values()), [])
    if first:
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(first) + 1.2))
        ax.barh([r["artifact"].removeprefix("export/") for r in first], [r["size_bytes"] / 1024 for r in first])
        ax.set_xscale("log")
        ax.set_xlabel("size, KiB (log scale; .pt rows: fp32 weights)")
        ax.set_title("size per artifact")
        out["sizes.png"] = _png(fig)
        plt.close(fig)
    return out


def _md_to_html(md: str) -> str:
    """The subset of Markdown that report.md uses: headings, paragraphs, pipe tables, `code`."""
    def inline(t: str) -> str:
        parts = html.escape(t).split("`")
        return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))

    out, table = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip("|").split("|")])
            continue
        if table:
            head, body = table[0], table[2:]
            out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>" +
                       "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in body) + "</table>")
            table = []
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{inline(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    return "\n".join(out)


def html_report(report: dict, table: dict[str, list[dict]], md: str, path: Path, plots_dir: Path,
                sweep_plot: Path) -> list[Path]:
    """Write report.html and plots/*.png, embedding the sweep's plot when there is one; return the report's files."""
    images = _plots(table)
    written = []
    for name, data in images.items():
        write_bytes(plots_dir / name, data)
        written.append(plots_dir / name)
    if sweep_plot.exists():  # drawn by edgekd sweep: embedded as it is
        images[sweep_plot.name] = sweep_plot.read_bytes()
        written.append(sweep_plot)
    figures = "".join(f'<figure><img alt="{html.escape(n)}" src="data:image/png;base64,{base64.b64encode(d).decode()}">'
                      f"</figure>" for n, d in images.items())
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
             "margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}code{background:#f3f3f3}img{max-width:100%}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>edgekd report: "
            f"{html.escape(str(report['run']['name']))}</title><style>{style}</style></head><body>"
            f"{_md_to_html(md)}<h2>Plots</h2>{figures}</body></html>")
    write_text(path, page)
    return [path, *written]
