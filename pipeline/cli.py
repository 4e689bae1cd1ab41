"""The `edgekd` command line: argparse for arguments, rich for output. Log handlers are set only here."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from edgekd import __version__
from edgekd.errors import EdgekdError

console = Console(stderr=True)


def _stdout() -> Console:
    """Results go to stdout; wide enough for the tables when it is a file or a CI log."""
    return Console() if Console().is_terminal else Console(width=150)


def _percent(x: float) -> str:
    return f"{100 * x:.2f}%"


def print_models(summary, out: Console) -> None:
    """The table `edgekd run` ends with, plus the distillation verdict."""
    table = Table(title=f"edgekd run: {summary.run_dir}")
    for col in ("model", "arch", "params", "MACs", "test accuracy", "epochs", "train s", "s/epoch", "stage"):
        table.add_column(col, justify="left" if col in ("model", "arch", "stage") else "right")
    for name, m in summary.metrics.items():
        status = "ran" if name in summary.ran else "skipped"
        table.add_row(name, m["arch"], f"{m['params']:,}", f"{m['macs']:,}", _percent(m["accuracy"]),
                      str(m["epochs"]), f"{m['train_seconds']:.1f}", f"{m['epoch_seconds_median']:.3f}", status)
    out.print(table)
    models = summary.metrics
    if {"teacher", "baseline", "student"} <= set(models):
        t, b, s = (models[k]["accuracy"] for k in ("teacher", "baseline", "student"))
        gap = t - b
        closed = f"{(s - b) / gap:.0%} of the teacher-baseline gap" if gap > 0 else "n/a (baseline >= teacher)"
        out.print(f"distilled student vs baseline: {100 * (s - b):+.2f} points; closes {closed}; "
                  f"teacher/student MACs {models['teacher']['macs'] / max(models['student']['macs'], 1):.1f}x; "
                  f"distill/baseline epoch time {models['student']['epoch_seconds_median'] / models['baseline']['epoch_seconds_median']:.2f}x")


def print_artifacts(artifacts: list[dict], out: Console) -> None:
    """What the export stage wrote: size, accuracy through its own runtime, parity, and what it really is."""
    table = Table(title="exported artifacts (accuracy measured by each file's own runtime on data/eval.npz)")
    for col in ("file", "size KiB", "accuracy", "Δ vs PyTorch", "top-1 agree", "max |Δlogit|", "audit"):
        table.add_column(col, justify="left" if col in ("file", "audit") else "right")
    for a in artifacts:
        p, audit = a["parity"], a["audit"]
        kind = f"{audit['kind']} ({'/'.join(audit['weight_dtypes'])} weights, {audit['input_dtype']} in)"
        table.add_row(a["file"], f"{a['size_bytes'] / 1024:,.1f}", _percent(p["accuracy"]),
                      f"{100 * (p['accuracy'] - p['reference_accuracy']):+.2f} pts", _percent(p["top1_agreement"]),
                      f"{p['max_abs_diff']:.1e}", kind)
    out.print(table)


def cmd_run(args: argparse.Namespace) -> int:
    from edgekd.pipeline.config import load_config
    from edgekd.pipeline.progress import RichProgress, SilentProgress
    from edgekd.pipeline.run import run_pipeline

    cfg = load_config(Path(args.config), args.set)
    out = Path(args.out) if args.out else Path("runs") / cfg.run.name
    progress = (lambda label: SilentProgress()) if args.quiet else (lambda label: RichProgress(label, console))
    summary = run_pipeline(cfg, out.resolve(), until=args.until, force=tuple(args.force), progress=progress)
    stdout = _stdout()
    print_models(summary, stdout)
    if summary.artifacts:
        print_artifacts(summary.artifacts, stdout)
    stdout.print(f"run directory: {out}")
    if (out / "report.html").exists() and "report" in summary.ran + summary.skipped:
        stdout.print(f"report: {out / 'report.md'} and {out / 'report.html'}")
    return 0


def _run_dir(text: str) -> Path:
    from edgekd.errors import UsageError

    path = Path(text)
    if not (path / "manifest.json").is_file():
        raise UsageError(f"{path}: not an edgekd run directory (no manifest.json); pass the --out of `edgekd run`, "
                         "e.g. runs/mnist5k")
    return path.resolve()


def cmd_bench(args: argparse.Namespace) -> int:
    import dataclasses

    from edgekd.pipeline.bench_stage import bench_local
    from edgekd.pipeline.config import load_config
    from edgekd.errors import UsageError

    bad = [t for t in args.target if t != "local"]
    if bad:
        raise UsageError(f"unknown target {', '.join(bad)}; valid: local (run bench/agent.py on other devices and "
                         "merge with `edgekd report RUN_DIR --add RESULT.json`)")
    run_dir = _run_dir(args.run_dir)
    cfg = load_config(run_dir / "config.toml").bench
    if args.threads:
        cfg = dataclasses.replace(cfg, threads=args.threads)
    path = bench_local(run_dir, cfg, progress=lambda line: console.print(line, highlight=False))
    Console().print(f"results: {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from edgekd.pipeline.report import write_report

    paths = write_report(_run_dir(args.run_dir), [Path(p) for p in args.add])
    Console().print("report: " + ", ".join(str(p) for p in paths[:3]))
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from edgekd.pipeline.pack import pack

    out = Path(args.output)
    names = pack(_run_dir(args.run_dir), out)
    Console().print(f"bundle: {out} ({len(names)} files, {out.stat().st_size / 1024:,.0f} KiB); on the device: "
                    f"python agent.py {out.name} -o results.json")
    return 0


def _load_report(path: Path) -> dict:
    import json

    from edgekd.pipeline.gate import BudgetError

    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BudgetError(f"{path}: not a readable report ({exc}); pass the report.json that `edgekd report` wrote")
    if report.get("schema") != "edgekd.report/1" or not isinstance(report.get("results"), list):
        raise BudgetError(f"{path}: schema {report.get('schema')!r}, expected 'edgekd.report/1' with a results list")
    return report


def cmd_gate(args: argparse.Namespace) -> int:
    from edgekd.fileio import write_text
    from edgekd.pipeline.gate import check, check_regression, exit_code, load_budgets
    from edgekd.pipeline.gate_output import junit_xml, notes, summary_line, table, verdicts_json

    budgets, regression = load_budgets(Path(args.budgets))
    report = _load_report(Path(args.report))
    verdicts = check(report, budgets)
    if args.baseline:
        verdicts += check_regression(report, _load_report(Path(args.baseline)), regression)
    code = exit_code(verdicts, regression)
    if args.junit:
        write_text(Path(args.junit), junit_xml(verdicts))
    if args.json:
        print(verdicts_json(verdicts, code))
    else:
        out = _stdout()
        out.print(table(verdicts))
        for line in notes(verdicts):
            out.print(f"  {line}", highlight=False)
        out.print(f"gate: {summary_line(verdicts)}", highlight=False)
    return code


def build_parser() -> argparse.ArgumentParser:
    def flags(suffix: str) -> argparse.ArgumentParser:
        # accepted before and after the command name; separate dests, because a subcommand's
        # defaults overwrite whatever the main parser set
        flags = argparse.ArgumentParser(add_help=False)
        flags.add_argument("--debug", action="store_true", dest=f"debug{suffix}", help="show tracebacks and debug logs")
        flags.add_argument("-q", "--quiet", action="store_true", dest=f"quiet{suffix}",
                           help="only warnings and the final table")
        return flags
    common = flags("")
    parser = argparse.ArgumentParser(prog="edgekd", parents=[flags("_before")], description="Distil a PyTorch "
                                     "teacher into a small, benchmarked, mobile-ready student.")
    parser.add_argument("--version", action="version", version=f"edgekd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", parents=[common], help="train teacher, baseline and distilled student (skips fresh stages)")
    run.add_argument("config", help="TOML config, e.g. configs/digits.toml")
    run.add_argument("--out", help="run directory (default: runs/<run.name>)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set distill.temperature=8 (repeatable)")
    run.add_argument("--until", metavar="STAGE", help="stop after this stage")
    run.add_argument("--force", action="append", default=[], metavar="STAGE",
                     help="re-run this stage and those that depend on it (repeatable)")
    run.set_defaults(func=cmd_run)
    bench = sub.add_parser("bench", parents=[common], help="measure every exported file on this machine")
    bench.add_argument("run_dir", help="a run directory, e.g. runs/mnist5k")
    bench.add_argument("--target", action="append", default=[], metavar="NAME", help="target name (only: local)")
    bench.add_argument("--threads", type=int, help="runtime threads (default: the run's bench.threads)")
    bench.set_defaults(func=cmd_bench)
    report = sub.add_parser("report", parents=[common], help="write report.json, report.md and report.html")
    report.add_argument("run_dir", help="a run directory, e.g. runs/mnist5k")
    report.add_argument("--add", action="append", default=[], metavar="RESULT.json",
                        help="merge results measured elsewhere (bench/agent.py output; repeatable)")
    report.set_defaults(func=cmd_report)
    gate = sub.add_parser("gate", parents=[common], help="check a report against budgets (exit 1 on a violation)")
    gate.add_argument("report", help="report.json")
    gate.add_argument("--budgets", required=True, help="budgets TOML ([[budget]] entries, optional [regression])")
    gate.add_argument("--baseline", help="an earlier report.json to check regressions against")
    gate.add_argument("--junit", metavar="FILE", help="also write JUnit XML (one test case per rule and result)")
    gate.add_argument("--json", action="store_true", help="print verdicts as JSON instead of the table")
    gate.set_defaults(func=cmd_gate)
    pack_cmd = sub.add_parser("pack", parents=[common], help="zip the exported files, eval set and agent for a device")
    pack_cmd.add_argument("run_dir", help="a run directory, e.g. runs/mnist5k")
    pack_cmd.add_argument("-o", "--output", required=True, metavar="BUNDLE.zip")
    pack_cmd.set_defaults(func=cmd_pack)
    return parser


def main(argv: list[str] | None = None) -> int:
    # user models (`arch = "package.module:ClassName"`) import from the directory edgekd runs in, as with
    # uvicorn; last on the path, so a user's own `models` or `pipeline` package never shadows anything
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.append(str(Path.cwd()))
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug, args.quiet = args.debug or args.debug_before, args.quiet or args.quiet_before
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    # third-party converters log at INFO by the hundred; show theirs from WARNING, ours at `level`
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False, show_level=args.debug)], force=True)
    logging.getLogger("edgekd").setLevel(level)
    try:
        return args.func(args)
    except EdgekdError as exc:
        if args.debug:
            raise
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished stages are kept; run the same command to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
