"""Typed TOML: frozen dataclasses filled from TOML tables, with every problem collected, never guessed.

Used for the pipeline config, budgets files and targets files alike: an unknown key lists the valid
ones, a wrong type says what was expected (and how to write it), a non-finite number is refused, and
all problems are reported together.
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
import types
from pathlib import Path
from typing import Any, Callable, Literal, Union, get_args, get_origin, get_type_hints

from edgekd.errors import ConfigError

# TOML integers are 64-bit signed (the spec: "an integer that cannot be represented losslessly is an error")
INT_MIN, INT_MAX = -(2 ** 63), 2 ** 63 - 1
# no string setting (a path, a name, a command) is longer than the longest path Linux takes (PATH_MAX)
MAX_STRING = 4096


def shown(value: Any, limit: int = 80) -> str:
    """`repr(value)` for a message, cut to `limit` characters with the full length said (a 100,000-digit
    number or path is named, not printed)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10 ** 40:
        return f"<an integer of {len(str(abs(value))):,} digits>"
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value):,} characters" if isinstance(value, str) else f"{len(text):,} characters as written"
    return f"{text[:limit]}... ({size})"


def type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin is tuple:
        return f"a list of {type_name(get_args(tp)[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _example(value: Any, tp: Any) -> str:
    """How `value` should have been written, when a single item was given for a list."""
    if get_origin(tp) is tuple and not isinstance(value, (list, tuple)):
        return f"; write a list, e.g. [{shown(value)}] (on the command line: --set \"KEY=[{shown(value)}]\")"
    return ""


def convert(value: Any, tp: Any, key: str, problems: list[str]) -> Any:
    """`value` as type `tp`; on a mismatch a problem naming `key` is appended and `value` returned."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a table, got {shown(value)}")
            return tp()
        return build(tp, value, key, problems)
    if origin in (Union, types.UnionType):  # Optional[X]: TOML has no null, so a value given is an X
        (inner,) = [a for a in get_args(tp) if a is not type(None)]
        return convert(value, inner, key, problems)
    if origin is Literal:
        if value not in get_args(tp) or isinstance(value, bool) != any(isinstance(a, bool) and a == value
                                                                         for a in get_args(tp)):
            problems.append(f"{key} = {shown(value)}: expected one of {type_name(tp)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            problems.append(f"{key} = {shown(value)}: expected {type_name(tp)}{_example(value, tp)}")
            return ()
        return tuple(convert(v, get_args(tp)[0], f"{key}[{i}]", problems) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{key} = {shown(value)}: expected a table, e.g. {{hidden = [64]}}")
            return {}
        return dict(value)
    ok = {bool: isinstance(value, bool),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool),
          str: isinstance(value, str)}[tp]
    if not ok:
        problems.append(f"{key} = {shown(value)}: expected {type_name(tp)}")
        return value
    if tp is float and not math.isfinite(value):
        problems.append(f"{key} = {shown(value)}: expected a finite number")
        return value
    if isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
        problems.append(f"{key} = {shown(value)}: out of range; TOML integers are 64-bit ({INT_MIN:,} to {INT_MAX:,})")
        return value
    if tp is str and len(value) > MAX_STRING:
        problems.append(f"{key} = {shown(value)}: too long; at most {MAX_STRING:,} characters (the longest path "
                        "Linux takes)")
        return value
    return float(value) if tp is float else value


def build(cls: type, raw: dict[str, Any], prefix: str, problems: list[str], base: Any = None,
          locate: Callable[[str], str] | None = None) -> Any:
    """`base` (default: `cls()`) with the keys of `raw` converted and applied; problems are appended.
    Fields with metadata {"toml": False} are not settable from TOML.

    `locate(key)` may prefix each problem with where the key is (e.g. "line 7: ").
    """
    hints = get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init and f.metadata.get("toml", True)]
    base = cls() if base is None else base
    values = {}
    for key, value in raw.items():
        dotted = f"{prefix}.{key}" if prefix else key
        where = locate(key) if locate else ""
        if key not in fields:
            scope = f" in [{prefix}]" if prefix else ""
            problems.append(f"{where}unknown key {shown(dotted)}; valid keys{scope}: {', '.join(fields)}")
            continue
        before = len(problems)
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            # onto this field's own default, so e.g. [student] keeps its default arch
            converted = build(hints[key], value, dotted, problems, getattr(base, key), locate)
        else:
            converted = convert(value, hints[key], dotted, problems)
        problems[before:] = [p if p.startswith(where) else where + p for p in problems[before:]]
        if len(problems) == before or dataclasses.is_dataclass(hints[key]):
            values[key] = converted  # a wrong value keeps the default so validation can still run
    return dataclasses.replace(base, **values)


def read_toml(path: Path, what: str) -> tuple[dict[str, Any], str]:
    """The parsed table and the text of a TOML file; ConfigError (exit 2) naming the file otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{what} not found"], str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{what} is not a readable text file ({exc})"], str(path)) from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], str(path)) from None
    except ValueError as exc:  # Python refuses to convert an integer of more than 4,300 digits
        raise ConfigError([f"not valid TOML: {str(exc).split(';')[0]}; TOML integers are 64-bit ({INT_MIN:,} to "
                           f"{INT_MAX:,})"], str(path)) from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split `a.b=c` into (["a", "b"], value); the value is read as TOML, else taken as a string."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError([f"--set {shown(item)}: expected KEY=VALUE, e.g. --set distill.temperature=8"], "--set")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    except ValueError:  # an integer of more than 4,300 digits, which Python refuses to convert
        digits = sum(c.isdigit() for c in text)
        name = key.strip() if len(key.strip()) <= 80 else shown(key.strip())
        raise ConfigError([f"--set {name}=<a number of {digits:,} digits>: out of range; TOML integers are 64-bit "
                           f"({INT_MIN:,} to {INT_MAX:,})"], "--set") from None
    return [p.strip() for p in key.split(".")], value


def apply_override(raw: dict[str, Any], path: list[str], value: Any, problems: list[str]) -> None:
    node = raw
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            problems.append(f"--set {'.'.join(path)}: {'.'.join(path[:i + 1])} is not a table")
            return
        node = child
    node[path[-1]] = value
