"""Targets: where `edgekd bench` measures, from `--targets FILE` or the run config's `[targets]` table.

    [targets.pi4]
    kind = "ssh"                     # local | ssh | adb | command
    host = "pi@raspberrypi.local"
    threads = [1, 4]

Each kind has its own typed table, checked like the config: a key another kind takes is named as such.
`local` always exists (this machine) unless a table of that name says otherwise.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgekd.errors import ConfigError
from edgekd.pipeline.config.typed import build, read_toml


@dataclass(frozen=True)
class LocalTargetConfig:
    kind: Literal["local"] = "local"
    threads: tuple[int, ...] = ()  # () takes bench.threads
    processes: int = 0  # 0 takes bench.processes
    timeout_s: float = 3600.0


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


@dataclass(frozen=True)
class ADBTargetConfig:
    kind: Literal["adb"] = "adb"
    serial: str = ""  # optional when one device is attached
    benchmark_binary: str = ""  # TFLite's benchmark_model for the phone's ABI
    use_xnnpack: tuple[bool, ...] = (True,)  # [true, false] measures with and without the delegate
    warmup_runs: int = 20
    num_runs: int = 200
    adb: str = "adb"
    threads: tuple[int, ...] = ()
    processes: int = 0
    timeout_s: float = 600.0


@dataclass(frozen=True)
class CommandTargetConfig:
    kind: Literal["command"] = "command"
    prefix: tuple[str, ...] = ()  # runs `*prefix agent.py ...`: ["chroot", "/srv/pi-root", "/opt/agent/bin/python"]
    stage_dir: str = ""  # where the files are copied (a fresh directory under it; default: a temporary one)
    stage_dir_inside: str = ""  # the same directory as the command sees it (default: stage_dir)
    shares_cpu: bool = True  # false for a prefix that runs elsewhere (srun, ssh)
    threads: tuple[int, ...] = ()
    processes: int = 0
    timeout_s: float = 1800.0


KINDS: dict[str, type] = {"local": LocalTargetConfig, "ssh": SSHTargetConfig, "adb": ADBTargetConfig,
                          "command": CommandTargetConfig}
TargetConfig = LocalTargetConfig | SSHTargetConfig | ADBTargetConfig | CommandTargetConfig


def _check(name: str, t: TargetConfig) -> list[str]:
    where, p = f"targets.{name}", []
    if any(n < 1 for n in t.threads):
        p.append(f"{where}.threads = {list(t.threads)}: thread counts must be >= 1")
    if t.processes < 0 or t.timeout_s <= 0:
        p.append(f"{where}: processes must be >= 0 and timeout_s > 0")
    if isinstance(t, SSHTargetConfig) and t.port is not None and not 1 <= t.port <= 65535:
        p.append(f"{where}.port = {t.port}: a TCP port in 1..65535, or leave it out to use ~/.ssh/config's")
    if isinstance(t, SSHTargetConfig) and not t.host:
        p.append(f"{where}: kind 'ssh' needs host, e.g. host = \"pi@raspberrypi.local\"")
    if isinstance(t, ADBTargetConfig) and not t.benchmark_binary:
        p.append(f"{where}: kind 'adb' needs benchmark_binary, the path of TFLite's benchmark_model for the phone")
    if isinstance(t, CommandTargetConfig) and not t.prefix:
        p.append(f"{where}: kind 'command' needs prefix, e.g. prefix = [\"chroot\", \"/srv/pi-root\", \"python3\"]")
    if isinstance(t, CommandTargetConfig) and t.stage_dir_inside and not t.stage_dir:
        p.append(f"{where}: stage_dir_inside needs stage_dir (the same directory as this machine sees it)")
    return p


def parse_targets(raw: Any, source: str) -> tuple[dict[str, TargetConfig], list[str]]:
    """Typed target tables from a `targets` table; every problem collected."""
    if not isinstance(raw, dict):
        return {}, [f"{source}: targets must be a table of tables, e.g. [targets.pi4]"]
    targets, problems = {"local": LocalTargetConfig()}, []
    for name, table in raw.items():
        if not isinstance(table, dict):
            problems.append(f"targets.{name}: expected a table, e.g. [targets.{name}] with kind = \"ssh\"")
            continue
        kind = table.get("kind")
        if kind not in KINDS:
            problems.append(f"targets.{name}.kind = {kind!r}: expected one of {', '.join(map(repr, KINDS))}")
            continue
        before = len(problems)
        target = build(KINDS[kind], table, f"targets.{name}", problems)
        for i in range(before, len(problems)):  # name the kind that takes a key this kind does not
            key = problems[i].split("'")[1].rsplit(".", 1)[-1] if "unknown key" in problems[i] else None
            owners = [k for k, cls in KINDS.items() if key in {f.name for f in dataclasses.fields(cls)}]
            if owners:
                problems[i] += f" (that key is for kind {', '.join(map(repr, owners))})"
        problems += _check(name, target)
        targets[name] = target
    return targets, problems


def load_targets_file(path: Path) -> dict[str, TargetConfig]:
    raw, _ = read_toml(path, "targets file")
    unknown = sorted(set(raw) - {"targets"})
    targets, problems = parse_targets(raw.get("targets", {}), str(path))
    if unknown:
        problems.insert(0, f"unknown table(s) {', '.join(unknown)}; a targets file holds [targets.NAME] tables")
    if problems:
        raise ConfigError(problems, str(path))
    return targets


def as_dict(targets: dict[str, TargetConfig]) -> dict[str, dict]:
    return {name: dataclasses.asdict(t) for name, t in targets.items()}
