"""Shared test settings: the training seed comes from EDGEKD_TEST_SEED (default 0).

Run the suite for other seeds and other CPU kernel paths before trusting a learned-number assertion:

    EDGEKD_TEST_SEED=3 ATEN_CPU_CAPABILITY=default DNNL_MAX_CPU_ISA=SSE41 MKL_CBWR=COMPATIBLE make test
"""
import math
import os

SEED = int(os.environ.get("EDGEKD_TEST_SEED", "0"))


def binomial_floor(expected: float, n: int, sigmas: float = 4.0) -> float:
    """A floor for an accuracy measured on `n` samples whose typical value is `expected`: `sigmas`
    binomial standard errors below it, so sampling noise alone almost never crosses it."""
    return expected - sigmas * math.sqrt(expected * (1 - expected) / n)


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
# digits through export, bench and report: one ONNX and one int8 TFLite student (PTQ: on digits' small
# validation split auto would train QAT, which tests/test_qat.py covers), a tiny timing budget
FAST_BENCH = ["teacher.train.epochs=3", "student.train.epochs=3", "run.device=cpu", f"run.seed={SEED}",
              "export.models=['student']", "export.formats=['onnx', 'tflite_int8']", "export.int8_method=ptq",
              "bench.processes=2",
              "bench.min_runs=20", "bench.min_seconds=0.02", "bench.warmup=2", "bench.eager=['student']"]


def ctrl_c_once(cmd: list[str], marker, *, wait_s: float, delay_s: float) -> tuple[int, str]:
    """Start `cmd`, press Ctrl-C `delay_s` after `marker` (a path) appears, and return (exit code, stderr).

    Ctrl-C as a terminal delivers it: a test suite started in the background (a CI job, `make test &`)
    inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + wait_s
    while time.time() < deadline and proc.poll() is None and not marker.exists():
        time.sleep(0.02)
    time.sleep(delay_s)  # into a later epoch
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def veth_namespace(tag: str):
    """A second host on this machine (needs root and `ip`): a network namespace joined to this one by a
    veth pair. A context manager yielding (namespace, this side's address and interface, the other
    side's address and interface); both are removed on exit."""
    import contextlib
    import subprocess

    @contextlib.contextmanager
    def made():
        ns, peer = f"edgekd{tag}{os.getpid() % 10000}", f"ek{tag}{os.getpid() % 10000}"[:13]
        subnet = f"10.{231 + sum(map(ord, tag)) % 20}.{os.getpid() % 200 + 10}"
        ip_ns = ["ip", "netns", "exec", ns, "ip"]
        try:
            for cmd in (["ip", "netns", "add", ns], ["ip", "link", "add", peer + "a", "type", "veth", "peer", "name", peer + "b"],
                        ["ip", "link", "set", peer + "b", "netns", ns], ["ip", "addr", "add", f"{subnet}.1/24", "dev", peer + "a"],
                        ["ip", "link", "set", peer + "a", "up"], [*ip_ns, "addr", "add", f"{subnet}.2/24", "dev", peer + "b"],
                        [*ip_ns, "link", "set", peer + "b", "up"], [*ip_ns, "link", "set", "lo", "up"]):
                subprocess.run(cmd, check=True, capture_output=True)
            yield ns, (f"{subnet}.1", peer + "a"), (f"{subnet}.2", peer + "b")
        finally:
            subprocess.run(["ip", "link", "del", peer + "a"], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    return made()


def two_node_run(config: str, out, overrides: list[str], *, until: str = "", timeout: float = 600) -> dict:
    """`edgekd run CONFIG` as two torchrun nodes of one process each, the second in its own network
    namespace, rendezvous (c10d) and gloo over the veth pair between them; each node has its own --out
    (no shared disk). Returns {"seconds", "rank0_out", "returncodes", "stderr"}."""
    import shutil
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    with veth_namespace("n") as (ns, (here, here_if), (there, there_if)):
        def node(k: int, ifname: str, prefix: list[str]):
            cmd = [*prefix, torchrun, "--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d",
                   "--rdzv_endpoint", f"{here}:{port}", "--rdzv_id", "edgekd-two-nodes",
                   # both nodes share this machine's hostname, which resolves to loopback: each names its own
                   # address (--local_addr), and the store's host is named (torchrun finds itself by hostname)
                   "--local_addr", [here, there][k], "--rdzv_conf", f"is_host={int(k == 0)}", "-m", "edgekd.pipeline.cli",
                   "-q", "run", config, "--out", str(Path(out) / f"node{k}"), *(["--until", until] if until else []),
                   *[a for s in overrides for a in ("--set", s)]]
            env = {**os.environ, "GLOO_SOCKET_IFNAME": ifname, "OMP_NUM_THREADS": "1"}
            return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                                    start_new_session=True)  # torchrun and its worker: one group, killed together

        start = time.perf_counter()
        procs = [node(0, here_if, []), node(1, there_if, ["ip", "netns", "exec", ns])]
        try:
            errs = [p.communicate(timeout=timeout)[1] for p in procs]
        finally:
            for p in procs:
                try:
                    os.killpg(p.pid, 9)
                except ProcessLookupError:
                    pass
        seconds = time.perf_counter() - start
    written = [Path(out) / f"node{k}" for k in (0, 1) if (Path(out) / f"node{k}" / "metrics.json").exists()]
    return {"seconds": seconds, "rank0_out": written, "returncodes": [p.returncode for p in procs], "stderr": errs}
