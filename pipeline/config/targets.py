"""Targets: where `edgekd bench` measures, from `--targets FILE` or the run config's `[targets]` table.

    [targets.pi4]
    kind = "ssh"                     # local | ssh | adb | command
    host = "pi@raspberrypi.local"
    threads = [1, 4]

Each kind has its own typed table, declared by its module in bench/ (see edgekd.bench.kinds) and checked
like the config: a key another kind takes is named as such.
`local` always exists (this machine) unless a table of that name says otherwise.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgekd.bench.kinds import KINDS, TargetConfig, load
from edgekd.errors import ConfigError
from edgekd.pipeline.config.typed import build, read_toml


def _check(name: str, t: TargetConfig) -> list[str]:
    """What every kind's table must hold (its options), then what its own kind checks."""
    where, p = f"targets.{name}", []
    if any(n < 1 for n in t.threads):
        p.append(f"{where}.threads = {list(t.threads)}: thread counts must be >= 1")
    if t.processes < 0 or t.timeout_s <= 0:
        p.append(f"{where}: processes must be >= 0 and timeout_s > 0")
    return p + load(t.kind).check(where, t)


def parse_targets(raw: Any, source: str) -> tuple[dict[str, TargetConfig], list[str]]:
    """Typed target tables from a `targets` table; every problem collected."""
    if not isinstance(raw, dict):
        return {}, [f"{source}: targets must be a table of tables, e.g. [targets.pi4]"]
    targets, problems = {"local": load("local").config()}, []
    for name, table in raw.items():
        if not isinstance(table, dict):
            problems.append(f"targets.{name}: expected a table, e.g. [targets.{name}] with kind = \"ssh\"")
            continue
        kind = table.get("kind")
        if not isinstance(kind, str) or kind not in KINDS:  # a list would be unhashable
            problems.append(f"targets.{name}.kind = {kind!r}: expected one of {', '.join(map(repr, KINDS))}")
            continue
        before = len(problems)
        target = build(load(kind).config, table, f"targets.{name}", problems)
        for i in range(before, len(problems)):  # name the kind that takes a key this kind does not
            key = problems[i].split("'")[1].rsplit(".", 1)[-1] if "unknown key" in problems[i] else None
            owners = [k for k in KINDS if key in {f.name for f in dataclasses.fields(load(k).config)}]
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
