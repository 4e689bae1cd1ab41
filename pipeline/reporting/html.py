"""report.html: one self-contained file (plots embedded as PNG data URIs, no external URL) + plots/*.png."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from edgekd.fileio import write_bytes, write_text
from edgekd.pipeline.reporting.plots import plots


IMAGE = re.compile(r"!\[([^\]]*)\]\(plots/([^)]+)\)")


def _img(alt: str, data: bytes) -> str:
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}"></figure>'


def _md_to_html(md: str, images: dict[str, bytes]) -> str:
    """The subset of Markdown that report.md uses: headings, paragraphs, pipe tables, `code`, **bold**, and
    images under plots/ (embedded from `images`)."""
    def inline(t: str) -> str:
        parts = html.escape(t).split("`")
        coded = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
        return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", coded)

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
        image = IMAGE.fullmatch(line.strip())
        if image and image.group(2) in images:
            out.append(_img(image.group(1), images[image.group(2)]))
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{inline(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    return "\n".join(out)


def html_report(report: dict, table: dict[str, list[dict]], md: str, path: Path, plots_dir: Path,
                sweep_plot: Path) -> list[Path]:
    """Write report.html and plots/*.png, embedding the sweep's plot when there is one; return the report's files.
    A plot report.md shows inline stands there in the page too; the others follow under "More plots"."""
    images = plots(table, report.get("recommendations", {}))
    written = []
    for name, data in images.items():
        write_bytes(plots_dir / name, data)
        written.append(plots_dir / name)
    if sweep_plot.exists():  # drawn by edgekd sweep: embedded as it is
        images[sweep_plot.name] = sweep_plot.read_bytes()
        written.append(sweep_plot)
    inline = {name for _, name in IMAGE.findall(md)}
    figures = "".join(_img(n, d) for n, d in images.items() if n not in inline)
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
             "margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}code{background:#f3f3f3}img{max-width:100%}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>edgekd report: "
            f"{html.escape(str(report['run']['name']))}</title><style>{style}</style></head><body>"
            f"{_md_to_html(md, images)}<h2>More plots</h2>{figures}</body></html>")
    write_text(path, page)
    return [path, *written]
