"""The ssh target: a Raspberry Pi or any Linux board, through the system's own ssh.

The user's keys, ~/.ssh/config and known_hosts apply (a Host alias with its HostName, Port, User and
ProxyJump works as on the command line: `-p` is passed only when the targets file sets a port); host
keys are never accepted silently (BatchMode: no prompt, so an unknown host key is an error). Every remote argument is quoted, so a
file name with spaces, `;` or `$(...)` is only a name. Files travel as one tar stream into a fresh
`mktemp -d` directory, which is removed afterwards, also after a failure, a timeout or Ctrl-C.
"""
from __future__ import annotations

import io
import shlex
import socket
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from edgekd.bench.agent.jobs import Job
from edgekd.bench.agent.limits import Deadline
from edgekd.bench.agent.runtimes import RUNTIMES, any_runtime, install_hint, probe_source
from edgekd.bench.kinds import Kind
from edgekd.bench.targets import BenchOptions, Call, agent_args, json_document, last_line, merge_documents, stage
from edgekd.errors import AgentError


def is_this_machine(host: str) -> bool:
    """Whether `host` ([user@]name) resolves to an address of this machine: timing there shares our CPU."""
    name = host.rsplit("@", 1)[-1]
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None)}
    except socket.gaierror:
        return False
    for address in addresses:
        if address.startswith("127.") or address == "::1":
            return True
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.bind((address, 0))  # only an address of one of our own interfaces can be bound
                return True
        except OSError:
            continue
    return False


def ssh_config(host: str, args: list[str]) -> dict[str, str]:
    """What ssh itself makes of `host` with these arguments and the user's config (`ssh -G`: hostname,
    port, user, proxyjump, ...); {} where this ssh cannot say (too old, or not installed)."""
    try:
        proc = subprocess.run(["ssh", "-G", *args, host], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    pairs = (line.split(None, 1) for line in proc.stdout.splitlines() if " " in line)
    return {key.lower(): value.strip() for key, value in pairs} if proc.returncode == 0 else {}


def shares_this_cpu(host: str, args: list[str]) -> bool:
    """Whether ssh to `host` lands on this machine: its HostName (after ~/.ssh/config) is one of our
    addresses and no ProxyJump or ProxyCommand leads elsewhere first."""
    config = ssh_config(host, args)
    if config.get("proxyjump", "none") != "none" or config.get("proxycommand", "none") != "none":
        return False  # the name is resolved by the jump host, not here
    return is_this_machine(config.get("hostname", host))


@dataclass(frozen=True)
class SSHTargetConfig:
    kind: Literal["ssh"] = "ssh"
    host: str = ""  # [user@]host, as for the ssh command (~/.ssh/config applies)
    port: int | None = None  # None: what ssh chooses (~/.ssh/config's Port for the host, else 22)
    python: str = "python3"  # the device's Python with numpy and a runtime
    ssh_options: tuple[str, ...] = ()  # extra ssh arguments, e.g. ["-i", "~/.ssh/pi_key"]
    threads: tuple[int, ...] = ()
    processes: int = 0
    timeout_s: float = 600.0


class SSHTarget:
    kind = "ssh"

    def __init__(self, name: str, host: str, port: int | None = None, python: str = "python3",
                 options: BenchOptions = BenchOptions(), ssh_options: tuple[str, ...] = ()):
        self.name, self.host, self.port, self.python, self.options = name, host, port, python, options
        self.ssh_options = list(ssh_options)
        self.shares_cpu = shares_this_cpu(host, self.args())
        self.remote_dir: str | None = None
        self.call = Call()
        self.deadline = Deadline(options.timeout_s)  # the fleet restarts it when this target's turn begins

    def args(self) -> list[str]:
        """ssh's arguments before the host: `-p` only when the targets file sets a port, so that a
        ~/.ssh/config Port (or its default, 22) applies otherwise."""
        return [*(["-p", str(self.port)] if self.port is not None else []), "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=10", *self.ssh_options]

    def _ssh(self, remote: str, stdin: bytes | None = None, timeout: float | None = 60, limited: bool = True) -> str:
        cmd = ["ssh", *self.args(), self.host, remote]
        proc = self.call(cmd, stdin, timeout, self.deadline if limited else None)
        if proc.returncode == 255 and self.remote_dir:  # it answered before: the connection broke
            raise AgentError(f"target {self.name}: lost the ssh connection to {self.host} ({last_line(proc.stderr)})", 1)
        if proc.returncode == 255:
            by_hand = " ".join(shlex.quote(a) for a in ["ssh", *(["-p", str(self.port)] if self.port is not None else []),
                                                         self.host, "true"])
            raise AgentError(f"target {self.name}: cannot reach {self.host} over ssh ({last_line(proc.stderr)}); check "
                             f"that `{by_hand}` works (keys, known_hosts, network, ~/.ssh/config)", 3)
        if proc.returncode == 127:
            raise AgentError(f"target {self.name}: {self.python!r} not found on {self.host}; set `python` in the "
                             "targets file to the device's Python 3", 3)
        if proc.returncode != 0:
            raise AgentError(f"target {self.name}: {last_line(proc.stderr) or f'exit code {proc.returncode}'}",
                             3 if proc.returncode == 3 else 1)
        return proc.stdout

    def prepare(self) -> None:
        probe = self._ssh(f"{shlex.quote(self.python)} -c {shlex.quote(probe_source())}")
        found = json_document(probe.strip().splitlines()[-1] if probe.strip() else "",
                              f"target {self.name}: the answer of {self.python} on {self.host} to the runtime probe")
        pip = f"{self.python} -m pip install {install_hint()}"
        if not found.get("numpy"):
            raise AgentError(f"target {self.name}: {self.host}'s Python {found.get('python')} has no numpy; on the "
                             f"device run: {pip}", 3)
        if not any(found.get(runtime) for runtime in RUNTIMES):
            raise AgentError(f"target {self.name}: {self.host} has no runtime ({any_runtime()}); on the device run: "
                             f"{pip}", 3)
        self.remote_dir = self._ssh("mktemp -d /tmp/edgekd-XXXXXXXX").strip()

    def run(self, files: list[Path], eval_path: Path, extra_jobs: list[Job] = (),
            progress: Callable[[str], None] | None = None) -> dict:
        with tempfile.TemporaryDirectory(prefix="edgekd-stage-") as tmp:
            models, eval_rel = stage(files, eval_path, Path(tmp))
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                tar.add(tmp, arcname=".")
        where = shlex.quote(self.remote_dir)
        self._ssh(f"tar -xf - -C {where}", stdin=buf.getvalue(), timeout=None)
        documents = []
        for threads in self.options.threads:
            out = f"result-{threads}.json"
            args = " ".join(shlex.quote(a) for a in agent_args(models, eval_rel, self.options, threads, self.name))
            self._ssh(f"cd {where} && {shlex.quote(self.python)} agent.pyz {args} -o {out}", timeout=None)
            documents.append(json_document(self._ssh(f"cat {where}/{out}"), f"target {self.name}: the agent's {out}"))
        return merge_documents(self.name, documents)

    def cleanup(self) -> None:
        self.call.stop()
        if self.remote_dir:
            remote, self.remote_dir = self.remote_dir, None
            try:
                self._ssh(f"rm -rf {shlex.quote(remote)}", timeout=30, limited=False)  # also after the deadline
            except AgentError:
                pass  # the host went away: nothing more to clean from here


def _check(where: str, t: SSHTargetConfig) -> list[str]:
    p = []
    if t.port is not None and not 1 <= t.port <= 65535:
        p.append(f"{where}.port = {t.port}: a TCP port in 1..65535, or leave it out to use ~/.ssh/config's")
    if not t.host:
        p.append(f"{where}: kind 'ssh' needs host, e.g. host = \"pi@raspberrypi.local\"")
    return p


def _build(name: str, t: SSHTargetConfig, options: BenchOptions) -> SSHTarget:
    return SSHTarget(name, t.host, t.port, t.python, options, t.ssh_options)


KIND = Kind(SSHTargetConfig, _build, _check)
