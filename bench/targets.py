"""Where benchmarks run. A target measures model files with the agent and returns the agent's bench
document (schema edgekd.bench/1: results and skipped rows). Each kind's module declares its table and
how its target is built (`KIND`); bench/kinds.py lists the kinds. This module: what targets share, and
the `command` kind.

    target.prepare()                      # check the device answers and has a runtime (AgentError exit 3 if not)
    document = target.run(files, eval_path)
    target.cleanup()                      # always, also after a failure, a timeout or Ctrl-C

`options.timeout_s` limits the whole measurement of a target (prepare, every process and call, the
fleet's retry), not each call: `target.deadline` counts it down from the target's construction, and
the fleet restarts it when the target's turn begins.

Torch-free and pipeline-free like the agent: the host builds the jobs it wants beside the files
(the PyTorch eager rows) and hands them in as `extra_jobs`, which only the local target runs.
"""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Protocol

from edgekd.bench.agent import pyz
from edgekd.bench.agent.jobs import BENCH_SCHEMA, Job
from edgekd.bench.agent.limits import Deadline
from edgekd.bench.agent.worker import Timing
from edgekd.bench.kinds import Kind
from edgekd.errors import AgentError


@dataclass(frozen=True)
class BenchOptions:
    threads: tuple[int, ...] = (1,)
    processes: int = 5
    timing: Timing = field(default_factory=Timing)
    timeout_s: float | None = None  # for the whole measurement on the target (see Deadline), None: no limit
    profile: bool = False  # and one op profile per file, in its own process, after the timed ones


class Target(Protocol):
    name: str
    kind: str
    shares_cpu: bool  # timed on this machine's CPU: never at the same time as another such target
    options: BenchOptions
    deadline: Deadline  # options.timeout_s, counting down

    def prepare(self) -> None: ...

    def run(self, files: list[Path], eval_path: Path, extra_jobs: list[Job] = (),
            progress: Callable[[str], None] | None = None) -> dict: ...

    def cleanup(self) -> None: ...


def artifact_name(model: Path) -> str:
    """How the run names a model file (its sidecar's `file`, e.g. export/student.onnx), else its name."""
    sidecar = model.with_name(model.name + ".json")
    try:
        return json.loads(sidecar.read_text()).get("file", model.name)
    except (OSError, ValueError):
        return model.name


def stage(files: list[Path], eval_path: Path, into: Path) -> tuple[list[str], str]:
    """Copy the agent, the models (with sidecars, under their run names) and the eval set into `into`;
    return the models' and the eval set's paths relative to it."""
    into.mkdir(parents=True, exist_ok=True)
    pyz.build(into / "agent.pyz")
    names = []
    for f in files:
        name = artifact_name(f)
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, into / name)
        if f.with_name(f.name + ".json").exists():
            shutil.copy2(f.with_name(f.name + ".json"), into / (name + ".json"))
        names.append(name)
    (into / "data").mkdir(exist_ok=True)
    shutil.copy2(eval_path, into / "data" / "eval.npz")
    return names, "data/eval.npz"


def agent_args(models: list[str], eval_rel: str, options: BenchOptions, threads: int, target: str) -> list[str]:
    return [*models, "--eval", eval_rel, "--threads", str(threads), "--processes", str(options.processes),
            "--target", target, *options.timing.args(), *(["--profile"] if options.profile else [])]


def merge_documents(target: str, documents: list[dict]) -> dict:
    """One bench document from one per thread count."""
    return {"schema": BENCH_SCHEMA, "target": target, "results": [r for d in documents for r in d.get("results", [])],
            "skipped": [s for d in documents[:1] for s in d.get("skipped", [])]}


class Call:
    """Runs one external command at a time and can stop it from another thread (Ctrl-C, a timeout)."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None

    def __call__(self, cmd: list[str], stdin: bytes | None = None, timeout: float | None = None,
                 deadline: Deadline | None = None) -> subprocess.CompletedProcess:
        """Run `cmd`; stopped after `timeout` seconds or when `deadline` passes, whichever comes first."""
        limit = deadline.left(timeout) if deadline else timeout
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        try:
            out, err = self.proc.communicate(stdin, timeout=limit)
        except subprocess.TimeoutExpired:
            self.stop()
            if deadline and deadline.passed():
                raise deadline.expired() from None
            raise AgentError(f"{cmd[0]}: no result within {limit:.0f} s", 1) from None
        finally:
            proc, self.proc = self.proc, None
        return subprocess.CompletedProcess(cmd, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    def stop(self) -> None:
        proc = self.proc
        if proc and proc.poll() is None:
            try:
                import os
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


def json_document(text: str, what: str) -> dict:
    """The JSON object in `text`, also when a login script printed lines around it (a banner, `fortune`);
    AgentError (exit 1) naming `what` when there is none."""
    try:
        document = json.loads(text)
    except ValueError:
        document = None
        for start in (m.start() for m in re.finditer(r"^\{", text, re.MULTILINE)):
            try:
                document = json.JSONDecoder().raw_decode(text, start)[0]  # one object; what follows is chatter
                break
            except ValueError:
                continue
    if not isinstance(document, dict):
        first = next((ln for ln in text.splitlines() if ln.strip()), "nothing")
        raise AgentError(f"{what} is not a JSON object (it starts with {first[:80]!r}); if a login script "
                         "prints to stdout, make it print only for interactive shells", 1)
    return document


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].removeprefix("error: ") if lines else ""


@dataclass(frozen=True)
class CommandTargetConfig:
    kind: Literal["command"] = "command"
    prefix: tuple[str, ...] = ()  # runs `*prefix agent.pyz ...`: ["chroot", "/srv/pi-root", "/opt/agent/bin/python"]
    stage_dir: str = ""  # where the files are copied (a fresh directory under it; default: a temporary one)
    stage_dir_inside: str = ""  # the same directory as the command sees it (default: stage_dir)
    shares_cpu: bool = True  # false for a prefix that runs elsewhere (srun, ssh)
    threads: tuple[int, ...] = ()
    processes: int = 0
    timeout_s: float = 1800.0


class CommandTarget:
    """The agent run through a command prefix: a chroot, an emulator, `docker exec`, `srun`.

    The files are copied into `stage_dir` (a fresh directory under it; default: a temporary one),
    which the command sees as `stage_dir_inside` (default: the same path).
    """

    kind = "command"

    def __init__(self, name: str, prefix: tuple[str, ...], options: BenchOptions = BenchOptions(), stage_dir: str = "",
                 stage_dir_inside: str = "", shares_cpu: bool = True):
        self.name, self.prefix, self.options, self.shares_cpu = name, list(prefix), options, shares_cpu
        self.stage_dir, self.stage_dir_inside = stage_dir, stage_dir_inside
        self.workdir: Path | None = None
        self.call = Call()
        self.deadline = Deadline(options.timeout_s)

    def prepare(self) -> None:
        base = Path(self.stage_dir) if self.stage_dir else None
        if base is not None and not base.is_dir():
            raise AgentError(f"target {self.name}: stage_dir {base} is not a directory", 3)
        self.workdir = Path(tempfile.mkdtemp(prefix="edgekd-", dir=base))

    def _inside(self, path: Path) -> str:
        if not self.stage_dir_inside:
            return str(path)
        return str(Path(self.stage_dir_inside) / path.relative_to(Path(self.stage_dir)))

    def run(self, files: list[Path], eval_path: Path, extra_jobs: list[Job] = (),
            progress: Callable[[str], None] | None = None) -> dict:
        models, eval_rel = stage(files, eval_path, self.workdir)
        inside = self._inside(self.workdir)
        documents = []
        for threads in self.options.threads:
            out = f"result-{threads}.json"
            args = agent_args([f"{inside}/{m}" for m in models], f"{inside}/{eval_rel}", self.options, threads, self.name)
            proc = self.call([*self.prefix, f"{inside}/agent.pyz", *args, "-o", f"{inside}/{out}"],
                             deadline=self.deadline)
            if proc.returncode != 0:
                raise AgentError(f"target {self.name}: {last_line(proc.stderr) or f'exit code {proc.returncode}'}",
                                 3 if proc.returncode in (3, 126, 127) else 1)
            documents.append(json_document((self.workdir / out).read_text(), f"target {self.name}: the agent's {out}"))
        return merge_documents(self.name, documents)

    def cleanup(self) -> None:
        self.call.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def _check(where: str, t: CommandTargetConfig) -> list[str]:
    p = []
    if not t.prefix:
        p.append(f"{where}: kind 'command' needs prefix, e.g. prefix = [\"chroot\", \"/srv/pi-root\", \"python3\"]")
    if t.stage_dir_inside and not t.stage_dir:
        p.append(f"{where}: stage_dir_inside needs stage_dir (the same directory as this machine sees it)")
    return p


def _build(name: str, t: CommandTargetConfig, options: BenchOptions) -> CommandTarget:
    return CommandTarget(name, t.prefix, options, t.stage_dir, t.stage_dir_inside, t.shares_cpu)


KIND = Kind(CommandTargetConfig, _build, _check)
