"""The ssh target: a Raspberry Pi or any Linux board, through the system's own ssh.

The user's keys, ~/.ssh/config and known_hosts apply; host keys are never accepted silently
(BatchMode: no prompt, so an unknown host key is an error). Every remote argument is quoted, so a
file name with spaces, `;` or `$(...)` is only a name. Files travel as one tar stream into a fresh
`mktemp -d` directory, which is removed afterwards, also after a failure, a timeout or Ctrl-C.
"""
from __future__ import annotations

import io
import json
import shlex
import socket
import tarfile
import tempfile
from pathlib import Path
from typing import Callable

from edgekd.bench.agent import AgentError, Job
from edgekd.bench.targets import BenchOptions, Call, agent_args, last_line, merge_documents, stage

PROBE = """
import json, sys
found = {"python": sys.version.split()[0]}
def version(name):
    try:
        module = __import__(name)
        return getattr(module, "__version__", "unknown")
    except Exception:
        return None
found["numpy"] = version("numpy")
found["tflite"] = version("ai_edge_litert") and "ai_edge_litert" or version("tflite_runtime") and "tflite_runtime"
found["onnx"] = version("onnxruntime")
print(json.dumps(found))
"""


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


class SSHTarget:
    kind = "ssh"

    def __init__(self, name: str, host: str, port: int = 22, python: str = "python3",
                 options: BenchOptions = BenchOptions(), ssh_options: tuple[str, ...] = ()):
        self.name, self.host, self.port, self.python, self.options = name, host, port, python, options
        self.ssh_options = list(ssh_options)
        self.shares_cpu = is_this_machine(host)
        self.remote_dir: str | None = None
        self.call = Call()

    def _ssh(self, remote: str, stdin: bytes | None = None, timeout: float | None = 60) -> str:
        cmd = ["ssh", "-p", str(self.port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", *self.ssh_options,
               self.host, remote]
        proc = self.call(cmd, stdin, timeout)
        if proc.returncode == 255 and self.remote_dir:  # it answered before: the connection broke
            raise AgentError(f"target {self.name}: lost the ssh connection to {self.host} ({last_line(proc.stderr)})", 1)
        if proc.returncode == 255:
            raise AgentError(f"target {self.name}: cannot reach {self.host} over ssh ({last_line(proc.stderr)}); check "
                             f"that `ssh -p {self.port} {self.host} true` works (keys, known_hosts, network)", 3)
        if proc.returncode == 127:
            raise AgentError(f"target {self.name}: {self.python!r} not found on {self.host}; set `python` in the "
                             "targets file to the device's Python 3", 3)
        if proc.returncode != 0:
            raise AgentError(f"target {self.name}: {last_line(proc.stderr) or f'exit code {proc.returncode}'}",
                             3 if proc.returncode == 3 else 1)
        return proc.stdout

    def prepare(self) -> None:
        found = json.loads(self._ssh(f"{shlex.quote(self.python)} -c {shlex.quote(PROBE)}").strip().splitlines()[-1])
        pip = f"{self.python} -m pip install numpy ai-edge-litert onnxruntime"
        if not found.get("numpy"):
            raise AgentError(f"target {self.name}: {self.host}'s Python {found.get('python')} has no numpy; on the "
                             f"device run: {pip}", 3)
        if not found.get("tflite") and not found.get("onnx"):
            raise AgentError(f"target {self.name}: {self.host} has no runtime (ai-edge-litert, tflite-runtime or "
                             f"onnxruntime); on the device run: {pip}", 3)
        self.remote_dir = self._ssh("mktemp -d /tmp/edgekd-XXXXXXXX").strip()

    def run(self, files: list[Path], eval_path: Path, extra_jobs: list[Job] = (),
            progress: Callable[[str], None] | None = None) -> dict:
        with tempfile.TemporaryDirectory(prefix="edgekd-stage-") as tmp:
            models, eval_rel = stage(files, eval_path, Path(tmp))
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                tar.add(tmp, arcname=".")
        where = shlex.quote(self.remote_dir)
        self._ssh(f"tar -xf - -C {where}", stdin=buf.getvalue(), timeout=self.options.timeout_s)
        documents = []
        for threads in self.options.threads:
            out = f"result-{threads}.json"
            args = " ".join(shlex.quote(a) for a in agent_args(models, eval_rel, self.options, threads, self.name))
            self._ssh(f"cd {where} && {shlex.quote(self.python)} agent.py {args} -o {out}", timeout=self.options.timeout_s)
            documents.append(json.loads(self._ssh(f"cat {where}/{out}")))
        return merge_documents(self.name, documents)

    def cleanup(self) -> None:
        self.call.stop()
        if self.remote_dir:
            remote, self.remote_dir = self.remote_dir, None
            try:
                self._ssh(f"rm -rf {shlex.quote(remote)}", timeout=30)
            except AgentError:
                pass  # the host went away: nothing more to clean from here
