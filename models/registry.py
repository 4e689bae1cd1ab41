"""The architecture registry: a literal dict name -> builder, plus user models named `pkg.module:Class`.

Every builder takes `(in_shape, num_classes, **kwargs)` and returns an `nn.Module` mapping a batch
of shape `(N, *in_shape)` to logits of shape `(N, num_classes)`.
"""
from __future__ import annotations

import errno
import importlib
import inspect
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from edgekd.models.cnn import cnn
from edgekd.errors import ModelError, cut
from edgekd.models.dsconv import dsconv
from edgekd.models.mlp import mlp

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "cnn": cnn,
    "dsconv": dsconv,
}

# Keyword arguments a user class may accept that we fill in from the data when the config omits them.
_INJECTED = ("num_classes", "in_channels")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model: stored in every checkpoint beside its weights."""

    arch: str
    in_shape: tuple[int, ...]
    num_classes: int
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "in_shape": list(self.in_shape), "num_classes": self.num_classes,
                "kwargs": dict(self.kwargs)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        return cls(d["arch"], tuple(d["in_shape"]), int(d["num_classes"]), dict(d["kwargs"]))


def _load_file(path_text: str):
    """A user model given as a file, 'path/to/file.py:ClassName': imported under a name of its own."""
    import hashlib
    import importlib.util

    path = Path(path_text).expanduser().resolve()
    try:
        source = path.read_bytes()
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise ModelError(f"user model file {cut(path_text)!r} not found") from None
        raise ModelError(f"user model file {cut(path_text)!r}: cannot read it ({exc.strerror or exc})") from None
    # named by path and contents: a file edited since it was first imported is imported afresh
    digest = hashlib.sha256(str(path).encode() + b"\0" + source).hexdigest()
    name = f"edgekd_user_{path.stem}_{digest[:12]}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise ModelError(f"user model file {cut(path_text)!r} fails to import: {type(exc).__name__}: {exc}") from exc
    return sys.modules[name]


def _is_local(file: str | None) -> bool:
    """Whether `file` is a user's own source: a .py file outside site-packages, the standard library
    and edgekd itself (those are pinned by their versions, not by the run)."""
    import sysconfig

    if not file or not file.endswith(".py"):
        return False
    path = Path(file).resolve()
    if {"site-packages", "dist-packages"} & set(path.parts):
        return False
    own = Path(__file__).resolve().parents[1]  # the folder that holds models/, pipeline/, export/, bench/
    roots = {Path(p).resolve() for k, p in sysconfig.get_paths().items() if k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots |= {own / d for d in ("models", "pipeline", "export", "bench", "edgekd")}
    return not any(path.is_relative_to(root) for root in roots)


def source_files(arch: str) -> tuple[str, ...]:
    """The user's own source files that define `arch` ('file.py:Class' or 'package.module:Class' when
    that module is a local file): its module, and every local module it uses through its globals
    (imported helpers, base classes), transitively. Empty for built-in architectures and for classes
    from installed packages. Their sha256 are inputs of every stage that builds the model, so editing
    the class re-runs those stages."""
    import types

    if ":" not in arch:
        return ()
    try:
        target = _resolve(arch)
    except ModelError:  # reported where the model is built; a file that is there is still hashed
        module_name = arch.partition(":")[0]
        try:
            return (str(Path(module_name).resolve()),) if module_name.endswith(".py") and Path(module_name).is_file() else ()
        except OSError:
            return ()
    found: dict[str, None] = {}
    todo = [sys.modules.get(getattr(target, "__module__", "") or "")]
    seen: set[int] = set()
    while todo:
        module = todo.pop()
        if not isinstance(module, types.ModuleType) or id(module) in seen:
            continue
        seen.add(id(module))
        file = getattr(module, "__file__", None)
        if not _is_local(file):
            continue
        found[str(Path(file).resolve())] = None
        for value in list(vars(module).values()):
            if isinstance(value, types.ModuleType):
                todo.append(value)
            elif isinstance(value, (type, types.FunctionType)):
                todo.append(sys.modules.get(getattr(value, "__module__", "") or ""))
    return tuple(sorted(found))


def options_hint(arch: str) -> str:
    """What `arch` takes, with defaults: the fix for most build failures."""
    try:
        fn = _resolve(arch)
    except ModelError:
        return ""
    builtin = ":" not in arch
    params = [p for n, p in inspect.signature(fn).parameters.items()
              if not (builtin and n in ("in_shape", "num_classes")) and p.kind is not inspect.Parameter.VAR_KEYWORD]
    shown = [f"{p.name}={p.default!r}" if p.default is not inspect.Parameter.empty else p.name for p in params]
    return f"{arch!r} takes: {', '.join(shown) or 'no options'}"


def keyword_defaults(arch: str) -> dict[str, Any]:
    """The architecture's keyword arguments that have defaults, with them (user models included)."""
    params = inspect.signature(_resolve(arch)).parameters
    return {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}


def _resolve(arch: str) -> Callable[..., nn.Module]:
    if ":" not in arch:
        if arch not in ARCHITECTURES:
            raise ModelError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}, "
                             "or a user model as 'package.module:ClassName'")
        return ARCHITECTURES[arch]
    module_name, _, attr = arch.partition(":")
    module = _load_file(module_name) if module_name.endswith(".py") else None
    try:
        module = module or importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"cannot import module {module_name!r} for user model {arch!r} ({exc}); "
                         "make it importable (pip install it or add it to PYTHONPATH), or name the file: "
                         "'path/to/file.py:ClassName'") from exc
    target = getattr(module, attr, None)
    if not callable(target):
        raise ModelError(f"module {module_name!r} has no class {attr!r}")
    return target


def _accepted(fn: Callable[..., nn.Module], builtin: bool) -> tuple[set[str], bool]:
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    names = {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    if builtin:
        names -= {"in_shape", "num_classes"}
    return names, takes_any


# A keyword every architecture takes: the input is average-pooled by this factor before the model sees it, so
# the model computes at a lower resolution while its file takes the data's own (edgekd search varies it)
INPUT_POOL = "input_pool"


def check_arch(arch: str, kwargs: dict[str, Any]) -> list[str]:
    """Return every problem with `arch` and `kwargs` without building anything (empty when fine)."""
    try:
        fn = _resolve(arch)
    except ModelError as exc:
        return [str(exc)]
    pool = kwargs.get(INPUT_POOL, 1)
    if not isinstance(pool, int) or isinstance(pool, bool) or pool < 1:
        return [f"{INPUT_POOL} = {pool!r}: must be an integer >= 1 (the factor the input is average-pooled by)"]
    kwargs = {k: v for k, v in kwargs.items() if k != INPUT_POOL}
    names, takes_any = _accepted(fn, builtin=":" not in arch)
    unknown = sorted(set(kwargs) - names)
    if unknown and not takes_any:
        return [f"architecture {arch!r} does not take {', '.join(unknown)}; it takes: "
                f"{', '.join(sorted(names)) or 'no options'}"]
    return []


def build_model(spec: ModelSpec) -> nn.Module:
    """Build the model described by `spec` and check that it maps inputs to `num_classes` logits."""
    problems = check_arch(spec.arch, spec.kwargs)
    if problems:
        raise ModelError(problems[0])
    fn = _resolve(spec.arch)
    kwargs = dict(spec.kwargs)
    pool = kwargs.pop(INPUT_POOL, 1)
    inner = (spec.in_shape[0], *(max(1, side // pool) for side in spec.in_shape[1:]))
    if ":" in spec.arch:
        names, _ = _accepted(fn, builtin=False)
        fill = {"num_classes": spec.num_classes, "in_channels": spec.in_shape[0]}
        kwargs.update({k: fill[k] for k in _INJECTED if k in names and k not in kwargs})
        args: tuple = ()
    else:
        args = (inner, spec.num_classes)
    try:
        model = fn(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"architecture {spec.arch!r} with options {kwargs} failed to build: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec.arch!r} returned {type(model).__name__}, not a torch.nn.Module")
    if pool > 1:  # pooling converts to every format and to int8 as it is (no parameters, no new op kinds)
        model = nn.Sequential(OrderedDict(input_pool=nn.AvgPool2d(pool), net=model))
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *spec.in_shape))
    except RuntimeError as exc:
        raise ModelError(f"architecture {spec.arch!r} cannot take inputs of shape {list(spec.in_shape)}: {exc}") from exc
    if tuple(out.shape) != (2, spec.num_classes):
        raise ModelError(f"architecture {spec.arch!r} outputs shape {list(out.shape[1:])} per sample; "
                         f"the dataset has {spec.num_classes} classes, so it must output [{spec.num_classes}]")
    return model


def count_params(model: nn.Module) -> int:
    """Number of trainable and frozen parameters (buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, in_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one single-sample forward pass, from PyTorch's own FLOP counter.

    The counter covers convolutions and matrix products (all the arithmetic that matters for
    these models); element-wise ops, pooling and normalisation are not counted, as is customary.
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *in_shape))
    model.train(was_training)
    return counter.get_total_flops() // 2
