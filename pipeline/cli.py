"""The `edgekd` command line: argparse for arguments, rich for output. Log handlers are set only here.

Every command exits 0 on success, 1 when a check failed, 2 on bad input or usage, 3 when the
environment lacks something, 4 when the gate is inconclusive and its budgets ask for `inconclusive = "warn"`, 130 on Ctrl-C; an edgekd error prints
one message (no traceback without --debug).
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from edgekd import __version__
from edgekd.bench.kinds import KINDS
from edgekd.errors import EdgekdError, UsageError, cut
from edgekd.export.formats import FORMATS, formats_help
from edgekd.pipeline import interrupt

log = logging.getLogger("edgekd.pipeline.cli")  # by name: run as `python -m`, __name__ is "__main__"
console = Console(stderr=True)
if not console.is_terminal:  # a CI log or a file: whole lines, never wrapped at 80 columns
    console = Console(stderr=True, soft_wrap=True)

# the registries' names, for --help (literal here: importing the registries would import torch)
STAGES_HELP = "teacher, baseline, student, quantize, export, bench, report"
# the target kinds from their table, which names their modules without importing them (they import numpy)
TARGETS_HELP = ", ".join(KINDS)


def _run_dir(text: str) -> Path:
    from edgekd.pipeline.layout import RunLayout

    path = Path(text)
    try:
        found = RunLayout(path).manifest.is_file()
    except OSError as exc:  # a name longer than the system allows
        raise UsageError(f"{cut(str(path))}: not a usable path ({exc.strerror or exc})") from None
    if not found:
        raise UsageError(f"{cut(str(path))}: not an edgekd run directory (no manifest.json); pass the --out of "
                         "`edgekd run`, e.g. runs/mnist5k")
    return path.resolve()


def _writable_dir(path: Path, option: str) -> Path:
    """`path` as a directory this process can write into, created if needed; UsageError otherwise."""
    try:
        if path.exists() and not path.is_dir():
            raise UsageError(f"{option} {cut(str(path))}: is a file; pass a directory (it is created if missing)")
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".edgekd-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"{option} {cut(str(path))}: cannot write there ({exc.strerror or exc}); choose another "
                         "directory") from None
    return path.resolve()


def _launch_torchrun(args: argparse.Namespace, argv: list[str]) -> int:
    """`edgekd run --nproc N`: the same command under torchrun, N processes on this machine."""
    import subprocess

    rest = [a for i, a in enumerate(argv) if a != "--nproc" and (i == 0 or argv[i - 1] != "--nproc")
            and not a.startswith("--nproc=")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.nproc), "-m",
           "edgekd.pipeline.cli", *rest]
    code = subprocess.run(cmd).returncode
    if code not in (0, 2, 3):
        console.print("[bold red]error:[/] a training process failed (torchrun's summary above names the rank); "
                      "finished stages and epochs are kept: run the same command to resume", highlight=False)
    return code


def cmd_run(args: argparse.Namespace) -> int:
    from edgekd.pipeline.config import load_config
    from edgekd.pipeline.console import print_artifacts, print_models, stdout
    from edgekd.pipeline.distributed import launched_by_torchrun
    from edgekd.pipeline.progress import LineProgress, RichProgress, SilentProgress
    from edgekd.pipeline.run import run_pipeline

    cfg = load_config(Path(args.config), args.set)  # a bad config fails here, before any process starts
    if args.nproc > 1 and not launched_by_torchrun():
        return _launch_torchrun(args, args.argv)
    if launched_by_torchrun() and int(os.environ.get("RANK", "0")) != 0:  # only rank 0 touches the run directory
        run_pipeline(cfg, Path(args.out or Path("runs") / cfg.run.name).resolve(), until=args.until,
                     force=tuple(args.force))
        return 0
    out = _writable_dir(Path(args.out) if args.out else Path("runs") / cfg.run.name, "--out")
    if args.quiet:
        progress = lambda label: SilentProgress()  # noqa: E731
    elif console.is_terminal:
        progress = lambda label: RichProgress(label, console)  # noqa: E731
    else:
        progress = lambda label: LineProgress(label, lambda line: log.info("%s", line))  # noqa: E731
    summary = run_pipeline(cfg, out, until=args.until, force=tuple(args.force), progress=progress)
    screen = stdout()
    print_models(summary, screen)
    if summary.artifacts:
        print_artifacts(summary.artifacts, screen)
    screen.print(f"run directory: {args.out or out}")
    if "report" in summary.ran + summary.skipped:
        layout = summary.layout
        screen.print(f"report: {layout.report_md} and {layout.report_html}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import dataclasses

    from edgekd.pipeline.config import load_config
    from edgekd.pipeline.config.targets import as_dict, load_targets_file
    from edgekd.pipeline.layout import RunLayout
    from edgekd.pipeline.run import rerun_stages

    from edgekd.pipeline.manifest import RunRecords

    run_dir = _run_dir(args.run_dir)
    RunRecords(RunLayout(run_dir)).verify()  # before its config.toml is read: a hand-edited one is named as such
    cfg = load_config(RunLayout(run_dir).config)
    tables = {**cfg.targets, **(as_dict(load_targets_file(Path(args.targets))) if args.targets else {})}
    defined = {"local": None, **tables}
    names = tuple(args.target) or (tuple(tables) if args.all else cfg.bench.targets)
    unknown = [n for n in names if n not in defined]
    if unknown:
        raise UsageError(f"unknown target {', '.join(map(repr, unknown))}; defined: {', '.join(defined)} (define "
                         "targets in a file given with --targets FILE, or in the run config's [targets] table)")
    bench = dataclasses.replace(cfg.bench, targets=names, **({"threads": args.threads} if args.threads else {}),
                                **({"profile": True} if args.profile else {}))
    summary = rerun_stages(dataclasses.replace(cfg, targets=tables, bench=bench), run_dir, ("bench", "report"),
                           force=("bench",))
    outcomes = summary.bench_outcomes
    out = Console()
    for name in names:
        o = outcomes.get(name, {})
        out.print(f"{name}: {summary.layout.bench_file(name)}" + (f" ({o['status']}: {o['error']})" if o.get("error") else ""),
                  highlight=False)
    out.print(f"report: {summary.layout.report_md} and {summary.layout.report_html}")
    return 3 if any(o["status"] == "missing" for o in outcomes.values()) else 0


def cmd_report(args: argparse.Namespace) -> int:
    from edgekd.pipeline.layout import RunLayout
    from edgekd.pipeline.reporting.report import write_report

    paths = write_report(RunLayout(_run_dir(args.run_dir)), [Path(p) for p in args.add],
                         budgets=Path(args.budgets) if args.budgets else None)
    Console().print("report: " + ", ".join(str(p) for p in paths[:3]))
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from edgekd.pipeline.layout import RunLayout
    from edgekd.pipeline.pack import pack

    out = Path(args.output)
    if out.is_dir():
        raise UsageError(f"-o {out}: is a directory; name the bundle file, e.g. -o {out / 'bundle.zip'}")
    if not out.parent.is_dir():
        raise UsageError(f"-o {out}: the directory {out.parent} does not exist; create it or choose another path")
    names = pack(RunLayout(_run_dir(args.run_dir)), out, tuple(args.formats))
    bundle = shlex.quote(out.name)
    Console().print(f"bundle: {out} ({len(names)} files, {out.stat().st_size / 1024:,.0f} KiB); on the device: "
                    f"unzip -o {bundle} agent.pyz && python3 agent.pyz {bundle} -o results.json", highlight=False,
                    markup=False)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from edgekd.pipeline.config import load_config
    from edgekd.pipeline.layout import RunLayout
    from edgekd.pipeline.reporting.report import write_report
    from edgekd.pipeline.sweep import run_sweep, split_values, table_lines

    grid = [item for item in args.set if len(split_values(item.partition("=")[2])) > 1]
    base = [item for item in args.set if item not in grid]
    if not grid:
        raise UsageError("edgekd sweep needs at least one --set KEY=V1,V2,... with two or more values, e.g. "
                         "--set distill.temperature=1,2,4,8,20")
    if args.seeds < 1 or args.jobs < 1:
        raise UsageError("--seeds and --jobs must be >= 1")
    cfg = load_config(Path(args.config), base)
    out = _writable_dir(Path(args.out) if args.out else Path("runs") / f"{cfg.run.name}-sweep", "--out")
    summary = run_sweep(Path(args.config), base, grid, args.seeds, args.jobs, out,
                        progress=lambda line: console.print(line, highlight=False))
    write_report(RunLayout(out))
    screen = Console()
    for line in table_lines(summary):
        screen.print(line, highlight=False)
    screen.print(f"sweep: {RunLayout(out).sweep}; report: {RunLayout(out).report_md}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from edgekd.pipeline.config import load_config
    from edgekd.pipeline.layout import RunLayout
    from edgekd.pipeline.search import p50_limit, run_search

    if args.trials < 1 or args.jobs < 1:
        raise UsageError("--trials and --jobs must be >= 1")
    if args.format not in FORMATS:
        raise UsageError(f"--format {args.format!r}: unknown; valid: {', '.join(FORMATS)}")
    cfg = load_config(Path(args.config), args.set)
    limit = (args.max_p50_ms if args.max_p50_ms is not None else p50_limit(Path(args.budgets), args.target)
             if args.budgets else float("inf"))
    out = _writable_dir(Path(args.out) if args.out else Path("runs") / f"{cfg.run.name}-search", "--out")
    summary = run_search(Path(args.config), args.set, args.target, limit, args.trials, args.jobs, out, args.format,
                         progress=lambda line: console.print(line, highlight=False))
    screen = Console()
    if summary["answer"] is None:
        why = ("every candidate was over it in every process before training" if not summary["finalists"] else
               "no finalist met it when re-measured")
        screen.print(f"search: p50 limit {limit * 1e3:.1f} µs on {args.target}: {why}; see {RunLayout(out).search}")
        return 1
    final = next(c for c in summary["candidates"] if c["name"] == summary["answer"])["final"]
    screen.print(f"ship students/{summary['answer']}/export/ on {args.target}: p50 {final['p50_ms'] * 1e3:.1f} µs, "
                 f"val {final['val_accuracy']:.2%}, test {final['test_accuracy']:.2%}"
                 + (f"; runner-up {summary['runner_up']}: {summary['runner_up_lost']}" if summary["runner_up"] else ""))
    screen.print(f"search: {RunLayout(out).search}; plot: {RunLayout(out).search_plot}")
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from edgekd.pipeline.config import load_config
    from edgekd.pipeline.cv import markdown, run_cv
    from edgekd.pipeline.layout import RunLayout

    if args.folds < 2:
        raise UsageError("--folds must be >= 2")
    cfg = load_config(Path(args.config), [*args.set, f"data.folds={args.folds}"])
    out = _writable_dir(Path(args.out) if args.out else Path("runs") / f"{cfg.run.name}-cv{args.folds}", "--out")
    result = run_cv(Path(args.config), args.set, args.folds, out, progress=lambda line: console.print(line, highlight=False))
    screen = Console()
    for line in markdown(result)[2:]:
        screen.print(line, highlight=False)
    screen.print(f"cv: {RunLayout(out).cv} and {RunLayout(out).cv_table}")
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    from edgekd.api import gate
    from edgekd.fileio import write_text
    from edgekd.pipeline.console import stdout
    from edgekd.pipeline.reporting.gate_output import junit_xml, notes, summary_line, table, verdicts_json

    result = gate(Path(args.report), Path(args.budgets), Path(args.baseline) if args.baseline else None)
    if result.stale:
        console.print(f"gate: {len(result.stale)} stale result(s) not gated (measured on files re-created since): " +
                      ", ".join(sorted({f"{s['artifact']} on {s['target']}" for s in result.stale})), highlight=False)
    verdicts, code = result.verdicts, result.exit_code
    if args.junit:
        write_text(Path(args.junit), junit_xml(verdicts))
    try:
        if args.json:
            print(verdicts_json(verdicts, code), flush=True)
        else:
            out = stdout()
            out.print(table(verdicts))
            for line in notes(verdicts):
                out.print(f"  {line}", highlight=False)
            out.print(f"gate: {summary_line(verdicts)}", highlight=False)
    except BrokenPipeError:  # `edgekd gate ... | head`: the reader left; the verdict still stands
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
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
                                     "teacher into a small, benchmarked, mobile-ready student.",
                                     epilog=f"stages, in order: {STAGES_HELP}. formats: {formats_help()}. "
                                            f"targets: {TARGETS_HELP}. Exit codes: 0 ok, 1 a check failed, 2 bad "
                                            "input, 3 missing environment, 4 gate inconclusive (with inconclusive = \"warn\"), 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"edgekd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", parents=[common], help="train teacher, baseline and distilled student; export, "
                         "bench, report (skips fresh stages)")
    run.add_argument("config", help="TOML config, e.g. configs/digits.toml")
    run.add_argument("--out", help="run directory (default: runs/<run.name>)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set distill.temperature=8 or --set \"export.formats=['onnx']\" "
                          "(repeatable)")
    run.add_argument("--until", metavar="STAGE", help=f"stop after this stage ({STAGES_HELP})")
    run.add_argument("--force", action="append", default=[], metavar="STAGE",
                     help=f"re-run this stage and those that depend on it (repeatable; {STAGES_HELP})")
    run.add_argument("--nproc", type=int, default=1, metavar="N",
                     help="train with N processes under torchrun (DistributedDataParallel; gloo on CPU, NCCL on CUDA)")
    run.set_defaults(func=cmd_run)
    bench = sub.add_parser("bench", parents=[common], help="measure every exported file on targets (this machine, "
                           "a Pi over ssh, a phone over adb, a command prefix), then rewrite the report")
    bench.add_argument("run_dir", help="a run directory, e.g. runs/mnist5k")
    bench.add_argument("--target", action="append", default=[], metavar="NAME",
                       help="a target to measure on (repeatable; default: the run's bench.targets, i.e. local)")
    bench.add_argument("--targets", metavar="FILE", help="a TOML file of [targets.NAME] tables; kinds: " +
                       ", ".join(f"{name} ({row.help})" for name, row in KINDS.items()))
    bench.add_argument("--all", action="store_true", help="measure on every target the file and the config define")
    bench.add_argument("--threads", type=int, help="runtime threads (default: the run's bench.threads)")
    bench.add_argument("--profile", action="store_true",
                       help="also record where each file's time goes, op by op, in one more process per file "
                            "(not timed; the report shows the top ops)")
    bench.set_defaults(func=cmd_bench)
    report = sub.add_parser("report", parents=[common], help="write report.json, report.md and report.html")
    report.add_argument("run_dir", help="a run directory, e.g. runs/mnist5k")
    report.add_argument("--add", action="append", default=[], metavar="RESULT.json",
                        help="merge results measured elsewhere (the agent's output; repeatable)")
    report.add_argument("--budgets", metavar="FILE", help="recommend per target only files that fit these budgets")
    report.set_defaults(func=cmd_report)
    gate = sub.add_parser("gate", parents=[common], help="check a report against budgets (exit 1 on a violation)")
    gate.add_argument("report", help="report.json")
    gate.add_argument("--budgets", required=True, help="budgets TOML ([[budget]] entries, optional [regression])")
    gate.add_argument("--baseline", help="an earlier report.json to check regressions against")
    gate.add_argument("--junit", metavar="FILE", help="also write JUnit XML (one test case per rule and result)")
    gate.add_argument("--json", action="store_true", help="print verdicts as JSON instead of the table")
    gate.set_defaults(func=cmd_gate)
    sweep = sub.add_parser("sweep", parents=[common], help="one teacher, one student per grid point and seed "
                           "(e.g. temperature x alpha), in parallel processes")
    sweep.add_argument("config", help="TOML config, e.g. configs/mnist5k.toml")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2,...",
                       help="a grid axis (two or more values) or a fixed override (one value); repeatable")
    sweep.add_argument("--seeds", type=int, default=3, help="student seeds per point (default 3)")
    sweep.add_argument("--jobs", type=int, default=1, help="points trained at once, each in its own process")
    sweep.add_argument("--out", help="run directory (default: runs/<run.name>-sweep)")
    sweep.set_defaults(func=cmd_sweep)
    search = sub.add_parser("search", parents=[common], help="the distilled student that fits a target best: "
                            "latency measured there first, the rest by successive halving on the validation split")
    search.add_argument("config", help="TOML config, e.g. configs/mnist5k.toml")
    search.add_argument("--target", default="local", help="where latency is measured (default: local)")
    limit = search.add_mutually_exclusive_group()  # neither: no limit, the most accurate student and the front
    limit.add_argument("--max-p50-ms", type=float, metavar="MS", help="the p50 limit on the target, in ms")
    limit.add_argument("--budgets", metavar="FILE", help="a budgets file: its max_p50_ms for this target's student")
    search.add_argument("--trials", type=int, default=12, help="candidates (default 12); more extends the same list")
    search.add_argument("--jobs", type=int, default=1, help="students trained at once, each in its own process")
    search.add_argument("--format", default="tflite_int8", help="the file format timed (default tflite_int8)")
    search.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    search.add_argument("--out", help="run directory (default: runs/<run.name>-search)")
    search.set_defaults(func=cmd_search)
    cv = sub.add_parser("cv", parents=[common], help="k-fold comparison of teacher, distilled and simple student")
    cv.add_argument("config", help="TOML config, e.g. configs/digits.toml")
    cv.add_argument("--folds", type=int, default=5,
                    help="number of stratified folds, each the test split once (default 5)")
    cv.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    cv.add_argument("--out", help="output directory (default: runs/<run.name>-cv<K>)")
    cv.set_defaults(func=cmd_cv)
    pack_cmd = sub.add_parser("pack", parents=[common], help="zip the exported files, eval set and agent for a device")
    pack_cmd.add_argument("run_dir", help="a run directory, e.g. runs/mnist5k")
    pack_cmd.add_argument("-o", "--output", required=True, metavar="BUNDLE.zip")
    pack_cmd.add_argument("--formats", nargs="+", default=[], metavar="FORMAT",
                          help=f"bundle only these formats, e.g. what the device's runtime runs ({', '.join(FORMATS)})")
    pack_cmd.set_defaults(func=cmd_pack)
    return parser


def main(argv: list[str] | None = None) -> int:
    # user models (`arch = "package.module:ClassName"`) import from the directory edgekd runs in, as with
    # uvicorn; last on the path, so a user's own `models` or `pipeline` package never shadows anything
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.append(str(Path.cwd()))
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.debug, args.quiet = args.debug or args.debug_before, args.quiet or args.quiet_before
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    # third-party converters log at INFO by the hundred; show theirs from WARNING, ours at `level`
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, show_level=args.debug)
    else:  # one line per event, with its time and level, never cut or wrapped
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(message)s", datefmt="[%X]",
                        handlers=[handler], force=True)
    logging.getLogger("edgekd").setLevel(level)
    interrupt.install()
    try:
        return args.func(args)
    except EdgekdError as exc:
        if args.debug:
            raise
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished stages and epochs are kept; run the same command to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
