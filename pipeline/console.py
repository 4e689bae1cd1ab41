"""How numbers read, in the terminal and in the reports alike: one unit per magnitude, points for
differences of accuracy, and the tables `edgekd run` ends with."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from edgekd.paired import points


def fmt_ms(ms: float | None) -> str:
    """A latency in the unit that reads best: µs below 1 ms, ms below 1 s, else s."""
    if ms is None:
        return "-"
    if ms < 1.0:
        return f"{ms * 1e3:.1f} µs"
    if ms < 1000.0:
        return f"{ms:.2f} ms"
    return f"{ms / 1e3:.2f} s"


def fmt_pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.2f}%"


def fmt_points(fraction: float | None) -> str:
    """A difference of two accuracies, in percentage points."""
    return "-" if fraction is None else points(fraction)


def stdout() -> Console:
    """Results go to stdout; wide enough for the tables when it is a file or a CI log, and lines there
    are never wrapped."""
    return Console() if Console().is_terminal else Console(width=160, soft_wrap=True)


def distillation_headline(models: dict) -> str | None:
    """The run's headline: the distilled student against the same student trained on labels alone."""
    if not {"teacher", "baseline", "student"} <= set(models):
        return None
    t, b, s = (models[k]["accuracy"] for k in ("teacher", "baseline", "student"))
    gap = t - b
    closed = f"closes {(s - b) / gap:.0%} of the teacher-baseline gap" if gap > 0 else "the baseline matches the teacher"
    macs = models["teacher"]["macs"] / max(models["student"]["macs"], 1)
    return (f"distilled student {fmt_pct(s)} vs baseline {fmt_pct(b)} (teacher {fmt_pct(t)}): "
            f"{fmt_points(s - b)}; {closed}; teacher/student MACs {macs:.1f}x")


def print_models(summary, out: Console) -> None:
    """The table `edgekd run` ends with, plus the distillation verdict."""
    table = Table(title=f"edgekd run: {summary.run_dir}")
    for col in ("model", "arch", "params", "MACs", "test accuracy", "epochs", "train s", "s/epoch", "stage"):
        table.add_column(col, justify="left" if col in ("model", "arch", "stage") else "right")
    for name, m in summary.metrics.items():
        status = "ran now" if name in summary.ran else "skipped (up to date)"
        if m.get("resumed_from_epoch"):
            status += f", resumed after epoch {m['resumed_from_epoch']}"
        table.add_row(name, m["arch"], f"{m['params']:,}", f"{m['macs']:,}", fmt_pct(m["accuracy"]),
                      str(m.get("epochs", "-")), f"{m.get('train_seconds', 0):.1f}",
                      f"{m['epoch_seconds_median']:.3f}" if "epoch_seconds_median" in m else "-", status)
    out.print(table)
    headline = distillation_headline(summary.metrics)
    if headline:
        models = summary.metrics
        if {"baseline", "student"} <= set(summary.ran):  # a ratio of two timings from different runs means nothing
            ratio = models["student"]["epoch_seconds_median"] / models["baseline"]["epoch_seconds_median"]
            headline += f"; distill/baseline epoch time {ratio:.2f}x"
        out.print(headline, highlight=False)


def print_artifacts(artifacts: list[dict], out: Console) -> None:
    """What the export stage wrote: size, accuracy through its own runtime, parity, and what it really is."""
    table = Table(title="exported artifacts (accuracy measured by each file's own runtime on data/eval.npz)")
    for col in ("file", "size KiB", "accuracy", "Δ vs PyTorch", "top-1 agree", "max |Δlogit|", "audit"):
        table.add_column(col, justify="left" if col in ("file", "audit") else "right")
    for a in artifacts:
        p, audit = a["parity"], a["audit"]
        kind = f"{audit['kind']} ({'/'.join(audit['weight_dtypes'])} weights, {audit['input_dtype']} in)"
        if audit.get("float_ops") and audit["kind"] == "mixed":
            kind += f"; float: {', '.join(audit['float_ops'])}"
        table.add_row(a["file"], f"{a['size_bytes'] / 1024:,.1f}", fmt_pct(p["accuracy"]),
                      fmt_points(p["accuracy"] - p["reference_accuracy"]), fmt_pct(p["top1_agreement"]),
                      f"{p['max_abs_diff']:.1e}", kind)
    out.print(table)
