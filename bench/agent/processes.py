"""The agent's processes: how to start a worker the way this agent was started, a worker that dies
with its parent, temporary directories a killed agent leaves behind, and running one worker."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from edgekd.bench.agent.limits import Deadline
from edgekd.errors import AgentError


def agent_command() -> list[str]:
    """The command that starts this agent again the way it was started: the .pyz file it runs from
    (zipimport's loader names its archive), else the installed package (`python -m edgekd.bench.agent`);
    isolated (-I) when this interpreter is."""
    python = [sys.executable, *(["-I"] if sys.flags.isolated else [])]
    archive = getattr(__loader__, "archive", None)
    return [*python, str(Path(archive).resolve())] if archive else [*python, "-m", "edgekd.bench.agent"]




def die_with_parent() -> None:
    """Called first in a worker process: Linux sends it SIGTERM when its parent dies, so a killed
    benchmark leaves no orphan timing on the CPU. (Set here rather than in a preexec_fn, which would
    force fork() in a parent that may be running threads.)"""
    parent = os.getppid()
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        sys.exit(1)


def temp_dir() -> tempfile.TemporaryDirectory:
    """A temporary directory named after this process, so that one left by a killed agent can be found."""
    return tempfile.TemporaryDirectory(prefix=f"edgekd-{os.getpid()}-")


def sweep_stale_temp_dirs() -> None:
    """Remove temporary directories of agents that no longer run (killed before they could clean up)."""
    import shutil

    for path in Path(tempfile.gettempdir()).glob("edgekd-*-*"):
        pid = path.name.split("-")[1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass


def run_process(command: list[str], timeout: float | None = None, deadline: Deadline | None = None) -> dict:
    """Run one command that writes a JSON file given as `-o OUT`; its JSON, or AgentError with its
    last stderr line and its exit code (a runtime missing stays 3). It is stopped after `timeout`
    seconds or when `deadline` passes, whichever comes first."""
    limit = deadline.left(timeout) if deadline else timeout
    with temp_dir() as tmp:
        out = Path(tmp) / "out.json"
        try:
            proc = subprocess.run([*command, "-o", str(out)], capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            if deadline and deadline.passed():
                raise deadline.expired() from None
            raise AgentError(f"{' '.join(command[:3])}...: no result within {limit:.0f} s", 1) from None
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            message = lines[-1].removeprefix("error: ") if lines else f"exit code {proc.returncode}"
            raise AgentError(message, proc.returncode if proc.returncode in (2, 3) else 1)
        try:
            return json.loads(out.read_text())
        except (OSError, ValueError) as exc:
            raise AgentError(f"{' '.join(command[:3])}...: exited 0 without a readable result ({exc})", 1) from None
