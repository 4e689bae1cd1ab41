"""A target kind that exists only in tests, declared as every kind is (see edgekd.bench.kinds): `nice`
runs the agent on this machine under `nice -n NICENESS`, through the command kind's runner."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

from edgekd.bench.kinds import Kind
from edgekd.bench.targets import BenchOptions, CommandTarget


@dataclass(frozen=True)
class NiceTargetConfig:
    kind: Literal["nice"] = "nice"
    niceness: int = 10
    threads: tuple[int, ...] = ()
    processes: int = 0
    timeout_s: float = 600.0


def _check(where: str, t: NiceTargetConfig) -> list[str]:
    return [] if 0 <= t.niceness <= 19 else [f"{where}.niceness = {t.niceness}: expected 0..19, as for nice -n"]


def _build(name: str, t: NiceTargetConfig, options: BenchOptions) -> CommandTarget:
    target = CommandTarget(name, ("nice", "-n", str(t.niceness), sys.executable), options)
    target.kind = "nice"  # what the outcome and bench/<name>.json record
    return target


KIND = Kind(NiceTargetConfig, _build, _check)
