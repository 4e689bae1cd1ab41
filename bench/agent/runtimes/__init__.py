"""The runtimes the agent runs files on: a literal table, runtime name -> module.

Each module declares everything about its runtime: SUFFIXES (the file suffixes it runs), PACKAGES
(the importable names, probed in order), PIP (what installs each of PACKAGES; the first is the one
to suggest) and Runner (load_runtime, noop_run, and prepare / run / logits / predict on one file).
Adding a runtime is one module and one row here. The modules import their runtime only inside
Runner, so reading the table costs nothing on a device that lacks one.
"""
from __future__ import annotations

import importlib
import os
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from edgekd.errors import AgentError

RUNTIMES: dict[str, str] = {
    "tflite": "edgekd.bench.agent.runtimes.tflite",
    "onnx": "edgekd.bench.agent.runtimes.onnx",
    "pte": "edgekd.bench.agent.runtimes.pte",
}

# Run on the device by the ssh target before anything is copied there: one JSON line with its Python,
# numpy's version and, per runtime, the first of its packages that imports (null: none does).
PROBE = """
import json, sys
def version(name):
    try:
        return getattr(__import__(name), "__version__", "unknown")
    except Exception:
        return None
found = {"python": sys.version.split()[0], "numpy": version("numpy")}
for runtime, packages in %r:
    found[runtime] = next((p for p in packages if version(p)), None)
print(json.dumps(found))
"""


@contextmanager
def native_stderr_silenced():
    """Runtimes' C++ code logs to fd 2, bypassing Python (ExecuTorch each threadpool reset and CPU probe,
    LiteRT each compiled model): the agent's stderr carries only its own messages."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def runtime_module(name: str) -> ModuleType:
    """The module of runtime `name` ("tflite", "onnx"); AgentError naming the known ones."""
    if name not in RUNTIMES:
        raise AgentError(f"unknown runtime {name!r}; known: {', '.join(RUNTIMES)}")
    return importlib.import_module(RUNTIMES[name])


def suffixes() -> dict[str, str]:
    """File suffix -> runtime name, in table order."""
    found: dict[str, str] = {}
    for name in RUNTIMES:
        for suffix in runtime_module(name).SUFFIXES:
            if suffix in found:
                raise ValueError(f"{suffix} is claimed by runtimes {found[suffix]!r} and {name!r}; one per suffix")
            found[suffix] = name
    return found


def runner_for(path: Path) -> type:
    """The Runner class that runs `path`, by its suffix; AgentError (exit 2) naming the known suffixes."""
    known = suffixes()
    if path.suffix not in known:
        raise AgentError(f"{path}: unknown model type {path.suffix!r}; expected one of {', '.join(known)}")
    return runtime_module(known[path.suffix]).Runner


def probe_source() -> str:
    """Python source (3.9+, standard library) that prints what a device has: {"python": "3.11.2",
    "numpy": "1.24.2", "tflite": "tflite_runtime", "onnx": null}, a key per runtime of the table."""
    return PROBE % [(name, list(runtime_module(name).PACKAGES)) for name in RUNTIMES]


def install_hint() -> str:
    """The pip packages that give a device numpy and every runtime: "numpy ai-edge-litert onnxruntime"."""
    return " ".join(["numpy", *(runtime_module(name).PIP[0] for name in RUNTIMES)])


def any_runtime() -> str:
    """Every package that provides a runtime, for a message: "ai-edge-litert, tflite-runtime or onnxruntime"."""
    names = [pip for name in RUNTIMES for pip in runtime_module(name).PIP]
    return " or ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0]
