"""ExecuTorch programs without torch: pte_native.cpp, compiled once per machine against the runtime
libraries and headers the executorch wheel ships, and called through ctypes.

ExecuTorch's Python bindings link libtorch, and PyPI's aarch64 torch is a CUDA build that does not
import without several GB of nvidia wheels: on a Raspberry Pi, `pip install --no-deps executorch` and a
C++ compiler are what runs a `.pte`. The library is cached under $XDG_CACHE_HOME/edgekd (~/.cache),
keyed by the source, the wheel and the machine; building it takes seconds natively.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.resources
import importlib.util
import logging
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from edgekd.errors import AgentError

log = logging.getLogger(__name__)

# What the wheel's own CMake package (share/cmake/executorch-config.cmake) gives its consumers: the kernel
# and delegate libraries register themselves when loaded, so they are linked even though nothing names them.
LIBRARIES = ("executorch", "executorch_kernels_optimized", "executorch_kernels_quantized",
             "executorch_backend_xnnpack", "executorch_threadpool")
DEFINES = ("C10_USING_CUSTOM_GENERATED_MACROS", "ET_EVENT_TRACER_ENABLED", "ET_USE_THREADPOOL")
HOW = ("pip install executorch (its Python runtime needs torch), or pip install --no-deps executorch and a C++ "
       "compiler (apt install g++) for the agent's torch-free runner")
ERROR_BYTES = 512


def wheel_root() -> Path | None:
    """The installed executorch package's folder, where it carries lib/libexecutorch.so; None otherwise."""
    try:
        spec = importlib.util.find_spec("executorch")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "lib" / "libexecutorch.so").is_file():
            return Path(location)
    return None


def wheel_version(root: Path) -> str:
    """The wheel's version, read from executorch/version.py without importing it (it imports nothing, but
    the package's other modules import torch)."""
    found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", (root / "version.py").read_text())
    return found.group(1) if found else "unknown"


def _source() -> bytes:
    return importlib.resources.files(__package__).joinpath("pte_native.cpp").read_bytes()  # also inside agent.pyz


def build(root: Path) -> Path:
    """The compiled runner for the wheel at `root`, building it when this machine has none cached; exit 3
    naming what is missing when it cannot be built."""
    source = _source()
    key = hashlib.sha256(source + f"{root}|{wheel_version(root)}|{platform.machine()}".encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgekd" / "pte-runner" / key
    library = cache / "libedgekd_pte.so"
    if library.is_file():
        return library
    compiler = shutil.which(os.environ.get("CXX", "")) or shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        raise AgentError(f"no ExecuTorch runtime: torch does not import and no C++ compiler is on PATH to build "
                         f"the torch-free runner; {HOW}", 3)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "pte_native.cpp").write_bytes(source)
    except OSError as exc:
        raise AgentError(f"cannot build the torch-free ExecuTorch runner in {cache} ({exc.strerror}); set "
                         "XDG_CACHE_HOME to a writable folder", 3) from None
    partial = cache / f"libedgekd_pte.so.{os.getpid()}.partial"  # workers may build at once: each its own file
    include = root / "include"
    command = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", *(f"-D{d}" for d in DEFINES),
               f"-I{include}", f"-I{include}/executorch/runtime/core/portable_type/c10", str(cache / "pte_native.cpp"),
               "-o", str(partial), f"-L{root / 'lib'}", "-Wl,--no-as-needed", *(f"-l{lib}" for lib in LIBRARIES),
               "-Wl,--as-needed", f"-Wl,-rpath,{root / 'lib'}"]
    log.info("building the torch-free ExecuTorch runner into %s (once per machine)", cache)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise AgentError(f"no ExecuTorch runtime: building the torch-free runner with {compiler} failed "
                         f"({done.stderr.strip()[-600:]}); {HOW}", 3)
    os.replace(partial, library)
    return library


@functools.cache  # a worker asks for it three times (baseline, no-op run, the model): build check and typing once
def load_library(root: Path) -> ctypes.CDLL:
    """The runner's C functions, typed."""
    lib = ctypes.CDLL(str(build(root)))
    lib.edgekd_pte_set_threads.argtypes, lib.edgekd_pte_set_threads.restype = [ctypes.c_uint32], ctypes.c_int
    lib.edgekd_pte_load.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.edgekd_pte_load.restype = ctypes.c_void_p
    lib.edgekd_pte_input_shape.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int64), ctypes.c_int]
    lib.edgekd_pte_input_shape.restype = ctypes.c_int
    lib.edgekd_pte_output_numel.argtypes, lib.edgekd_pte_output_numel.restype = [ctypes.c_void_p], ctypes.c_int64
    lib.edgekd_pte_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.edgekd_pte_run.restype = ctypes.c_int
    lib.edgekd_pte_free.argtypes, lib.edgekd_pte_free.restype = [ctypes.c_void_p], None
    return lib


class Program:
    """One loaded program on the native runner: float32 in, float32 logits out."""

    def __init__(self, lib: ctypes.CDLL, path: Path):
        self._lib, self._error = lib, ctypes.create_string_buffer(ERROR_BYTES)
        self._handle = lib.edgekd_pte_load(str(path).encode(), self._error, ERROR_BYTES)
        if not self._handle:
            raise AgentError(f"{path}: not a loadable ExecuTorch program ({self._error.value.decode()})")
        sizes = (ctypes.c_int64 * 8)()
        self.input_shape = tuple(sizes[:lib.edgekd_pte_input_shape(self._handle, sizes, 8)])
        self._outputs = int(lib.edgekd_pte_output_numel(self._handle))

    def run(self, prepared: np.ndarray) -> np.ndarray:
        out = np.empty(self._outputs, np.float32)
        if self._lib.edgekd_pte_run(self._handle, prepared.ctypes.data, out.ctypes.data, self._error, ERROR_BYTES):
            raise AgentError(f"ExecuTorch: {self._error.value.decode()}")
        return out

    def __del__(self):
        if getattr(self, "_handle", None):
            self._lib.edgekd_pte_free(self._handle)
