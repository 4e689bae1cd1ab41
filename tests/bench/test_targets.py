"""Targets: ssh through a real sshd (config aliases, ProxyJump, quoting), a command prefix, the fleet's
scheduling, failures and time limits, board state, and the file to ship (adb: test_adb.py)."""
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgekd.bench.agent.device import board_state, thermal_summary
from edgekd.bench.agent.worker import Timing
from edgekd.errors import AgentError
from edgekd.bench.fleet import measure_fleet
from edgekd.bench.ssh import SSHTarget, is_this_machine
from edgekd.bench.local import LocalTarget
from edgekd.bench.targets import BenchOptions, CommandTarget, json_document
from edgekd.errors import ConfigError
from edgekd.pipeline.config.targets import load_targets_file
from edgekd.pipeline.reporting.recommend import recommend

QUICK = BenchOptions((1,), 2, Timing(2, 10, 0.0))


def _files(run: Path) -> list[Path]:
    return [run / "export" / "student.int8.tflite", run / "export" / "student.onnx"]


def _local_accuracy(run: Path) -> dict[str, float]:
    return {r["artifact"]: r["accuracy"] for r in json.loads((run / "bench" / "local.json").read_text())["results"]}


def test_ssh_target_measures_what_local_measures(bench_run, ssh_host):
    target = SSHTarget("loopback", ssh_host.host, ssh_host.port, sys.executable, QUICK, ssh_host.options)
    assert target.shares_cpu, "127.0.0.1 is this machine: its timing must not overlap local timing"
    target.prepare()
    remote = target.remote_dir
    try:
        doc = target.run(_files(bench_run), bench_run / "data" / "eval.npz")
    finally:
        target.cleanup()
    assert not Path(remote).exists(), "the remote directory is removed"
    local = _local_accuracy(bench_run)
    assert {r["artifact"]: r["accuracy"] for r in doc["results"]} == {k: local[k] for k in
                                                                        ("export/student.int8.tflite", "export/student.onnx")}
    assert all(r["target"] == "loopback" and r["latency_ms"]["processes"] == 2 for r in doc["results"])


def test_ssh_remote_arguments_are_quoted(bench_run, ssh_host, tmp_path):
    """A file name with spaces, `;` and `$(...)` is only a name on the device, and runs nothing."""
    name = "a b;$(cd; touch edgekd-pwned);c.onnx"
    weird = tmp_path / name
    shutil.copy(bench_run / "export" / "student.onnx", weird)
    target = SSHTarget("loopback", ssh_host.host, ssh_host.port, sys.executable, QUICK, ssh_host.options)
    target.prepare()
    try:
        doc = target.run([weird], bench_run / "data" / "eval.npz")
    finally:
        target.cleanup()
    assert [r["artifact"] for r in doc["results"]] == [name]
    assert not (Path.home() / "edgekd-pwned").exists()


def test_an_unknown_host_key_is_never_accepted(ssh_host, tmp_path):
    other = tmp_path / "known_hosts"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    other.write_text(f"[{ssh_host.address}]:{ssh_host.port} {(tmp_path / 'k.pub').read_text().split(maxsplit=2)[0]} "
                     f"{(tmp_path / 'k.pub').read_text().split()[1]}\n")
    options = tuple(o if not o.startswith("UserKnownHostsFile=") else f"UserKnownHostsFile={other}" for o in ssh_host.options)
    with pytest.raises(AgentError) as err:
        SSHTarget("pi", ssh_host.host, ssh_host.port, sys.executable, QUICK, options).prepare()
    assert err.value.exit_code == 3 and "cannot reach" in str(err.value) and "verification failed" in str(err.value)


@pytest.mark.parametrize("case", ["closed port", "no runtime"])
def test_ssh_environment_problems_exit_3_with_the_fix(ssh_host, case):
    port, python = (ssh_host.port, "/usr/bin/python3") if case == "no runtime" else (1, sys.executable)
    if case == "no runtime" and subprocess.run(["/usr/bin/python3", "-c", "import numpy"], capture_output=True).returncode == 0:
        pytest.skip("this machine's /usr/bin/python3 has numpy")
    with pytest.raises(AgentError) as err:
        SSHTarget("pi", ssh_host.host, port, python, QUICK, ssh_host.options).prepare()
    assert err.value.exit_code == 3
    assert ("-m pip install numpy ai-edge-litert onnxruntime" if case == "no runtime" else "cannot reach") in str(err.value)


def test_command_target_runs_the_agent_through_a_prefix(bench_run):
    target = CommandTarget("prefixed", ("env", "EDGEKD_FROM_PREFIX=1", sys.executable), QUICK)
    target.prepare()
    workdir = target.workdir
    try:
        doc = target.run(_files(bench_run), bench_run / "data" / "eval.npz")
    finally:
        target.cleanup()
    assert not workdir.exists()
    local = _local_accuracy(bench_run)
    assert all(r["accuracy"] == local[r["artifact"]] for r in doc["results"]) and len(doc["results"]) == 2


def _overlap(a, b) -> bool:
    return a.started_at < b.ended_at and b.started_at < a.ended_at


def test_fleet_never_overlaps_targets_on_this_cpu_and_overlaps_other_hosts(bench_run, ssh_host, tmp_path):
    from tests.conftest import start_sshd

    hosts = []
    try:
        for i in (1, 2):  # two more hosts, each an sshd in its own network namespace
            hosts.append(_netns_host(tmp_path / f"h{i}", i, start_sshd))
    except (PermissionError, subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"network namespaces unavailable here ({exc})")
    try:
        targets = [LocalTarget("local", QUICK), SSHTarget("loopback", ssh_host.host, ssh_host.port, sys.executable, QUICK,
                                                          ssh_host.options),
                   CommandTarget("prefixed", ("env", sys.executable), QUICK)]
        slow = BenchOptions((1,), 3, Timing(2, 10, 0.3))  # long enough for both remote hosts to be timing at once
        targets += [SSHTarget(f"host{i}", h.host, h.port, sys.executable, slow, h.options) for i, h in enumerate(hosts, 1)]
        outcomes = {o.target: o for o in measure_fleet(targets, _files(bench_run), bench_run / "data" / "eval.npz",
                                                        max_parallel=5)}
        assert all(o.status == "ok" for o in outcomes.values()), {o.target: o.error for o in outcomes.values()}
        on_this_cpu = [outcomes[n] for n in ("local", "loopback", "prefixed")]
        assert not any(_overlap(a, b) for i, a in enumerate(on_this_cpu) for b in on_this_cpu[i + 1:])
        assert _overlap(outcomes["host1"], outcomes["host2"]), "targets on distinct hosts run concurrently"
        # a host whose connection dies mid-run gets a row saying why; the other's rows are complete
        import threading
        killer = threading.Timer(2.0, lambda: subprocess.run(f"ip netns pids {hosts[1].netns} | xargs -r kill -9",
                                                              shell=True))
        killer.start()
        outcomes = {o.target: o for o in measure_fleet(targets[3:], _files(bench_run), bench_run / "data" / "eval.npz")}
        killer.join()
        assert outcomes["host1"].status == "ok" and len(outcomes["host1"].document["results"]) == 2
        assert outcomes["host2"].status != "ok" and "host2" in outcomes["host2"].error
    finally:
        for h in hosts:
            h.process.kill()
            subprocess.run(["ip", "netns", "del", h.netns], capture_output=True)


def _netns_host(folder: Path, index: int, start_sshd):
    import os

    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise PermissionError("needs root and the ip command: Debian iproute2")
    ns, link, net = f"edgekdt{index}", f"ekt{index}", f"10.232.{index}"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "link", "del", link + "a"], capture_output=True)
    for cmd in (f"ip netns add {ns}", f"ip link add {link}a type veth peer name {link}b", f"ip link set {link}b netns {ns}",
                f"ip addr add {net}.1/24 dev {link}a", f"ip link set {link}a up",
                f"ip netns exec {ns} ip addr add {net}.2/24 dev {link}b", f"ip netns exec {ns} ip link set {link}b up",
                f"ip netns exec {ns} ip link set lo up"):
        subprocess.run(cmd.split(), check=True, capture_output=True)
    host = start_sshd(folder, f"{net}.2", ns)
    assert not is_this_machine(host.host)
    return host


def test_targets_file_is_typed_and_names_what_is_wrong(tmp_path):
    (tmp_path / "t.toml").write_text('[targets.pi4]\nkind = "ssh"\nserial = "x"\n\n[targets.box]\nkind = "docker"\n')
    with pytest.raises(ConfigError) as err:
        load_targets_file(tmp_path / "t.toml")
    text = str(err.value)
    assert "unknown key 'targets.pi4.serial'" in text and "(that key is for kind 'adb')" in text
    assert "kind 'ssh' needs host" in text and "targets.box.kind = 'docker'" in text


# -- board state and the file to ship

def test_a_throttled_board_is_marked(tmp_path, monkeypatch):
    (tmp_path / "vcgencmd").write_text("#!/bin/sh\necho throttled=0x50005\n")
    (tmp_path / "vcgencmd").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    state = board_state()
    assert state["throttled_flags"] == 0x50005
    summary = thermal_summary({}, state)
    assert summary["throttled"] and "0x5" in summary["why"]  # under-voltage and throttled now
    cool = {"cpu_mhz": {"cur": [1800.0] * 4, "max": 1800.0, "min": 600.0}}
    hot = {"cpu_mhz": {"cur": [1500.0] * 4, "max": 1800.0, "min": 600.0}}
    assert thermal_summary(cool, hot)["why"] == "CPU frequency fell from 1800 to 1500 MHz"
    assert not thermal_summary(cool, cool)["throttled"]


def _row(artifact, target, p50, acc, spread=0.02, n=1000):
    """A row whose file gets the first acc * n samples right (so two rows differ only where one is right)."""
    correct = np.arange(n) < round(acc * n)
    return {"artifact": artifact, "target": target, "accuracy": acc, "threads": 1, "n_eval": n,
            "correct_bits": np.packbits(correct).tobytes().hex(),
            "latency_ms": {"p50": p50, "p50_ci95": [p50 * (1 - spread), p50 * (1 + spread)]}}


def test_the_file_to_ship_comes_from_each_targets_own_numbers():
    arts = [{"file": f"export/{m}{s}", "model": m, "precision": p, "size_bytes": 1000}
            for m in ("teacher", "student") for s, p in ((".tflite", "fp32"), (".int8.tflite", "int8"))]
    x86 = [_row("export/teacher.tflite", "x86", 0.13, 0.98), _row("export/teacher.int8.tflite", "x86", 0.17, 0.98),
           _row("export/student.tflite", "x86", 0.020, 0.975), _row("export/student.int8.tflite", "x86", 0.025, 0.974)]
    arm = [_row("export/teacher.tflite", "pi4", 2.0, 0.98), _row("export/student.tflite", "pi4", 0.30, 0.975),
           _row("export/student.int8.tflite", "pi4", 0.12, 0.974), _row("export/teacher.int8.tflite", "pi4", 0.9, 0.95)]
    report = {"artifacts": arts, "results": x86 + arm, "models": {"teacher": {"accuracy": 0.98}}}
    rec = recommend(report, max_drop=0.01)
    assert rec["x86"]["ship"] == "export/student.tflite"  # int8 is slower on this x86
    assert rec["x86"]["runner_up"] == "export/student.int8.tflite" and "1.25x" in rec["x86"]["why"]
    assert rec["pi4"]["ship"] == "export/student.int8.tflite"  # and faster on the Pi
    assert any(e["artifact"] == "export/teacher.int8.tflite" and "-3.00 pts" in e["why"] for e in rec["pi4"]["excluded"])
    assert recommend(report, 0.01, {("pi4", "export/student.int8.tflite")})["pi4"]["ship"] == "export/student.tflite"


# -- ssh config, failures of any kind, time limits

def test_ssh_passes_a_port_only_when_the_targets_file_sets_one():
    assert "-p" not in SSHTarget("pi", "pi.example", None).args()
    assert SSHTarget("pi", "pi.example", 2222).args()[:2] == ["-p", "2222"]


def _alias_config(ssh_host, folder: Path, extra: str = "") -> Path:
    """An ssh config file with a Host alias for the test sshd: HostName, Port, User, key and known_hosts."""
    opts = dict(zip(ssh_host.options[::2], ssh_host.options[1::2]))
    known = next(v for k, v in zip(ssh_host.options[::2], ssh_host.options[1::2]) if v.startswith("UserKnownHostsFile="))
    config = folder / "ssh_config"
    config.write_text(f"Host edgekd-pi\n  HostName {ssh_host.address}\n  Port {ssh_host.port}\n"
                      f"  User {ssh_host.host.split('@')[0]}\n  IdentityFile {opts['-i']}\n  IdentitiesOnly yes\n"
                      f"  {known.replace('=', ' ', 1)}\n  BatchMode yes\n{extra}")
    return config


def test_ssh_honours_a_config_host_alias_with_its_port(bench_run, ssh_host, tmp_path):
    """`Host edgekd-pi` with `Port <sshd's port>` in the config: reached and measured without a port in
    the targets file (before, `-p 22` overrode the config: "connect to host ... port 22: refused")."""
    config = _alias_config(ssh_host, tmp_path)
    target = SSHTarget("pi", "edgekd-pi", None, sys.executable, QUICK, ("-F", str(config)))
    assert target.shares_cpu, "the alias resolves (through ssh -G) to 127.0.0.1: this machine's CPU"
    target.prepare()
    try:
        doc = target.run(_files(bench_run)[:1], bench_run / "data" / "eval.npz")
    finally:
        target.cleanup()
    assert [r["artifact"] for r in doc["results"]] == ["export/student.int8.tflite"]
    assert doc["results"][0]["accuracy"] == _local_accuracy(bench_run)["export/student.int8.tflite"]
    wrong = SSHTarget("pi", "edgekd-pi", 1, sys.executable, QUICK, ("-F", str(config)))  # a set port wins
    with pytest.raises(AgentError) as err:
        wrong.prepare()
    assert err.value.exit_code == 3 and "port 1" in str(err.value) and "`ssh -p 1 edgekd-pi true`" in str(err.value)


def test_ssh_honours_proxyjump(ssh_host, tmp_path):
    """A target behind a jump host (here the same sshd, as its own alias): reached, and not taken for
    this machine, because the name is resolved on the far side of the jump."""
    config = _alias_config(ssh_host, tmp_path)
    text = config.read_text()
    config.write_text(text + text.replace("Host edgekd-pi", "Host edgekd-jump") +
                      text.replace("Host edgekd-pi", "Host edgekd-behind") + "  ProxyJump edgekd-jump\n")
    target = SSHTarget("behind", "edgekd-behind", None, sys.executable, QUICK, ("-F", str(config)))
    assert not target.shares_cpu
    target.prepare()
    try:
        assert target._ssh("echo $((6 * 7))").strip() == "42"
    finally:
        target.cleanup()


class _Fake:
    """A target whose run fails in a given way (or succeeds)."""

    kind, shares_cpu = "fake", False

    def __init__(self, name, error=None, options=BenchOptions()):
        self.name, self.error, self.options, self.runs, self.cleaned = name, error, options, 0, 0

    def prepare(self):
        pass

    def run(self, files, eval_path, extra_jobs=(), progress=None):
        self.runs += 1
        if self.error:
            raise self.error
        return {"schema": "edgekd.bench/1", "target": self.name, "results": [], "skipped": []}

    def cleanup(self):
        self.cleaned += 1


def test_a_failure_of_any_kind_is_that_targets_failed_row_and_never_the_fleets(tmp_path):
    polluted = None
    try:
        json.loads("Welcome to Raspberry Pi OS!\n{\"results\": []}")
    except json.JSONDecodeError as exc:
        polluted = exc
    targets = [_Fake("json", polluted), _Fake("index", IndexError("list index out of range")),
               _Fake("bug", KeyError("latency_ms")), _Fake("good")]
    outcomes = {o.target: o for o in measure_fleet(targets, [], tmp_path / "eval.npz")}
    assert outcomes["good"].status == "ok"
    assert outcomes["json"].status == "failed" and outcomes["json"].error.startswith("target json: JSONDecodeError: ")
    assert outcomes["index"].error == "target index: IndexError: list index out of range"
    assert outcomes["bug"].error == "target bug: KeyError: 'latency_ms'"
    assert all(t.cleaned == t.runs == 1 for t in targets)  # cleaned up, and not retried: it would fail alike


def test_ssh_reads_answers_through_a_chatty_login_shell(tmp_path):
    """A login script that prints (a banner, a motd) around the probe's and the agent's JSON."""
    target = SSHTarget("pi", "pi.example", None)
    answers = iter(['Welcome to Raspberry Pi OS!\n{"python": "3.11.2", "numpy": "1.24.2", "tflite": "tflite_runtime", '
                    '"onnx": null}\n', "/tmp/edgekd-abcdefgh\n"])
    target.call = lambda cmd, stdin=None, timeout=None, deadline=None: subprocess.CompletedProcess(cmd, 0, next(answers), "")
    target.prepare()
    assert target.remote_dir == "/tmp/edgekd-abcdefgh"
    target.remote_dir = None
    target.call = lambda cmd, stdin=None, timeout=None, deadline=None: subprocess.CompletedProcess(cmd, 0, "motd {x}\n", "")
    with pytest.raises(AgentError) as err:
        target.prepare()
    assert err.value.exit_code == 1 and "is not a JSON object (it starts with 'motd {x}')" in str(err.value)
    # the agent's result file as `cat` returns it through such a shell: indented JSON between chatter
    doc = {"schema": "edgekd.bench/1", "results": [{"latency_ms": {"p50": 1.5}}], "skipped": []}
    chatty = f"Last login: today {{tty}}\n{json.dumps(doc, indent=2)}\nhave a {{nice}} day\n"
    assert json_document(chatty, "result") == doc


def test_timeout_s_limits_the_whole_measurement_not_each_call(tmp_path):
    """A command that never answers, timeout_s = 2: failed after about 2 s in all, with no retry (the
    limit covers the retry too); before, each call had its own 2 s and the retry another 2 s."""
    target = CommandTarget("stuck", ("sh", "-c", "sleep 30"), BenchOptions((1,), 1, Timing(), timeout_s=2.0),
                           shares_cpu=False)
    (tmp_path / "eval.npz").write_bytes(b"staged, never read")
    began = time.monotonic()
    (outcome,) = measure_fleet([target], [], tmp_path / "eval.npz")
    elapsed = time.monotonic() - began
    assert outcome.status == "failed" and outcome.attempts == 1 and 1.9 < elapsed < 3.5
    assert outcome.error == ("target stuck: over the time limit: timeout_s = 2 s covers the whole measurement of a "
                             "target (every process and the retry); raise timeout_s in the targets file")


def test_timeout_s_limits_all_of_a_local_targets_processes_together(tmp_path):
    """5 worker processes of about 1.5 s each under timeout_s = 3: stopped after about 3 s, although each
    process alone is well within it."""
    from tests.bench.test_agent import _dense_tflite

    _dense_tflite(tmp_path / "m.tflite", 64, 10)
    np.savez(tmp_path / "eval.npz", x=np.zeros((8, 1, 8, 8), np.float32), y=np.zeros(8, np.int64))
    target = LocalTarget("local", BenchOptions((1,), 5, Timing(1, 5, 0.5), timeout_s=3.0))
    began = time.monotonic()
    (outcome,) = measure_fleet([target], [tmp_path / "m.tflite"], tmp_path / "eval.npz")
    assert outcome.status == "failed" and "timeout_s = 3 s" in outcome.error and outcome.attempts == 1
    assert time.monotonic() - began < 3 + 1.5
