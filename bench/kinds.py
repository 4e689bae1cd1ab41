"""The kinds of benchmark target: one row per kind, naming the module that declares it and a line of help.

A kind's module declares everything about it in one `KIND = Kind(...)`: the keys of its
[targets.NAME] table (a frozen dataclass of typed fields with defaults), the problems a table can
have beyond its types, and how its target is built. pipeline/config/targets.py parses and checks
tables from these declarations, the bench stage builds targets with them, and the CLI lists the rows.

Rows name modules, imported on first use (`load`): listing the kinds (`edgekd --help`, `edgekd gate`)
must not import the agent, which imports numpy (about 0.13 s, as long as the rest of the CLI's start).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    from edgekd.bench.targets import BenchOptions, Target


class TargetConfig(Protocol):
    """What every kind's table has besides its own keys (its dataclass declares them, with its defaults)."""

    kind: str  # Literal of the kind's name, defaulting to it
    threads: tuple[int, ...]  # () takes bench.threads
    processes: int  # 0 takes bench.processes
    timeout_s: float  # for the whole measurement on the target


def no_problems(where: str, config: Any) -> list[str]:
    return []


@dataclass(frozen=True)
class Kind:
    config: type  # a frozen dataclass of the table's keys, typed, with defaults (see TargetConfig)
    build: Callable[[str, Any, BenchOptions], Target]  # (name, its config, options) -> the target
    check: Callable[[str, Any], list[str]] = no_problems  # (where, config) -> problems beyond the types


@dataclass(frozen=True)
class Row:
    module: str  # declares KIND
    help: str


KINDS: dict[str, Row] = {
    "local": Row("edgekd.bench.local", "this machine"),
    "ssh": Row("edgekd.bench.ssh", "a Linux board such as a Raspberry Pi, over ssh"),
    "adb": Row("edgekd.bench.adb", "an Android phone over adb, with TFLite's benchmark_model"),
    "command": Row("edgekd.bench.targets", "the agent through a command prefix: chroot, docker exec, srun"),
}


def load(name: str) -> Kind:
    """The declaration of kind `name` (one of KINDS; the config has said so before anything is built)."""
    return importlib.import_module(KINDS[name].module).KIND
