import os
import tempfile

import pytest

# decoded image folders go to a cache of this test session, not the user's ~/.cache/edgekd
os.environ.setdefault("EDGEKD_CACHE_DIR", tempfile.mkdtemp(prefix="edgekd-test-cache-"))

from edgekd.pipeline.config import load_config
from edgekd.pipeline.run import run_pipeline
from tests.helpers import FAST_BENCH, ROOT


@pytest.fixture(scope="session")
def bench_run(tmp_path_factory):
    """A finished run of digits through export, bench and report (see helpers.FAST_BENCH)."""
    run_dir = tmp_path_factory.mktemp("bench") / "digits"
    run_pipeline(load_config(ROOT / "configs" / "digits.toml", FAST_BENCH), run_dir)
    return run_dir


import getpass  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

SSHD = shutil.which("sshd") or shutil.which("sshd", path="/usr/sbin:/sbin")  # sbin is not on every PATH


@dataclass
class SSHHost:
    """A real sshd this test session started, and the client options that reach it."""

    address: str
    port: int
    options: tuple[str, ...]
    process: subprocess.Popen
    netns: str = ""

    @property
    def host(self) -> str:
        return f"{getpass.getuser()}@{self.address}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sshd(folder: Path, address: str = "127.0.0.1", netns: str = "") -> SSHHost:
    """sshd on `address` with a host key and a client key made here; known_hosts holds its real key."""
    folder.mkdir(parents=True, exist_ok=True)
    for key in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)], check=True)
    (folder / "authorized_keys").write_text((folder / "client.pub").read_text())
    port = _free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress {address}\nHostKey {folder / 'host'}\nPidFile {folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nStrictModes no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\nLogLevel ERROR\n"
        f"SetEnv PATH={os.environ.get('PATH', '/usr/bin:/bin')}\n")
    Path("/run/sshd").mkdir(exist_ok=True) if os.geteuid() == 0 else None
    cmd = [SSHD, "-D", "-e", "-f", str(folder / "sshd_config")]
    process = subprocess.Popen((["ip", "netns", "exec", netns] if netns else []) + cmd, stderr=subprocess.PIPE)
    host_key = (folder / "host.pub").read_text().split()[:2]
    (folder / "known_hosts").write_text(f"[{address}]:{port} {' '.join(host_key)}\n")
    options = ("-F", "/dev/null", "-i", str(folder / "client"), "-o", "IdentitiesOnly=yes",
               "-o", f"UserKnownHostsFile={folder / 'known_hosts'}")
    ssh = SSHHost(address, port, options, process, netns)
    deadline = time.time() + 20
    while time.time() < deadline:
        probe = subprocess.run(["ssh", "-p", str(port), "-o", "BatchMode=yes", *options, ssh.host, "true"],
                               capture_output=True)
        if probe.returncode == 0:
            return ssh
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"sshd on {address}:{port} did not answer: {process.stderr.read().decode()[-500:]}")


@pytest.fixture(scope="session")
def ssh_host(tmp_path_factory):
    if SSHD is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("needs sshd, ssh and ssh-keygen (Debian openssh-server and openssh-client, installed by .ci/run)")
    host = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield host
    host.process.kill()


@pytest.fixture
def bench_copy(bench_run, tmp_path):
    """A copy of bench_run for a test that changes it (merges, re-benches, failed targets)."""
    copy = tmp_path / "digits"
    shutil.copytree(bench_run, copy)
    return copy
