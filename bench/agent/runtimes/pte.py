"""ExecuTorch programs (.pte) on ExecuTorch's runtime, with the kernels and delegates its wheel was
built with (XNNPACK among them): through its C++ bindings (`executorch.extension.pybindings._C`) where
torch imports, and through the agent's torch-free runner (pte_native) where it does not.

`executorch.runtime`, the documented wrapper of those bindings, imports ExecuTorch's compiler on the
way (`executorch.exir`, for a warning class): 5.9 s and torchao's load errors on stderr in every
worker process, against 1.5 s for the bindings alone. The bindings take and give torch tensors: torch
comes with executorch as its own dependency and is imported here only inside Runner. The bindings link
libtorch, which a Raspberry Pi rarely has (PyPI's aarch64 torch is a CUDA build): there the wheel's
torch-free libraries run the program through pte_native."""
from __future__ import annotations

import base64
import ctypes
import importlib
import re
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from edgekd.bench.agent.runtimes import native_stderr_silenced, pte_native
from edgekd.errors import AgentError

SUFFIXES = (".pte",)
PACKAGES = ("executorch",)
PIP = ("executorch",)


class Runner:
    """One loaded program; float32 in and out (an int8 program quantizes inside)."""

    # y = x + x on a float32 [1, 4], not delegated: a 944-byte program written by ExecuTorch 1.5.1 (to_edge,
    # to_executorch). Running it loads the runtime, its kernel registry and memory planner before the model.
    NOOP = ("HAAAAEVUMTIAAAAAEAAYAAAAFAAQAAwACAAEABAAAAAUAAAAKAAAADQAAAA0AAAANAAAAAD///8EAAAAAQAAAAAAAAAAAAAAAAAAAAEAAAAIAAAA"
            "BAAEAAQAAAAAAAAAAAAAAAEAAAAcAAAAAAAWACgAJAAgABwAGAAUABAADAAIAAQAFgAAACQAAAA4AAAAOAAAAGAAAADMAAAA0AAAANQAAACwAQAA"
            "/AIAAAIAAAAAAAAAAAAAACAAAAAAAAAAAAAAAAAAAAABAAAABAAAAIT+//8IAAAADAAAAAMAAABvdXQACQAAAGF0ZW46OmFkZAAAAAEAAAAQAAAA"
            "AAAKABAADAAIAAQACgAAAAwAAABMAAAATAAAAAEAAAAMAAAACAAMAAsABAAIAAAAEAAAAAAAAAEIAAgAAAAEAAgAAAAEAAAABQAAAAAAAAAAAAAA"
            "AgAAAAEAAAABAAAAAAAAAAAAAAABAAAAAQAAAAEAAAAAAAAAAwAAAIQAAAAoAAAABAAAAJD///8MAAAAAAIGABAABAAGAAAAAQAAAAAAAAAAAAAA"
            "sP///xgAAAAABRIAEgARAAAADAAIAAAAAAAEABIAAAAUAAAAGAAAABwAAAAABgYACAAEAAYAAAABAAAAAgAAAAABAAACAAAAAQAAAAQAAAAIAAoA"
            "CQAEAAgAAAAYAAAAAAUSABQAEwAAAAwACAAAAAAABAASAAAAEAAAABgAAAAcAAAAAAAABuD///8QAAAAAQAAAAIAAAAAAQAAAgAAAAEAAAAEAAAA"
            "CAAMAAgABAAIAAAACAAAAEQAAAA5AAAAWzEsIHsidHlwZSI6IG51bGwsICJjb250ZXh0IjogbnVsbCwgImNoaWxkcmVuX3NwZWMiOiBbXX1dAAAA"
            "/gAAAFsxLCB7InR5cGUiOiAiYnVpbHRpbnMudHVwbGUiLCAiY29udGV4dCI6ICJudWxsIiwgImNoaWxkcmVuX3NwZWMiOiBbeyJ0eXBlIjogImJ1"
            "aWx0aW5zLnR1cGxlIiwgImNvbnRleHQiOiAibnVsbCIsICJjaGlsZHJlbl9zcGVjIjogW3sidHlwZSI6IG51bGwsICJjb250ZXh0IjogbnVsbCwg"
            "ImNoaWxkcmVuX3NwZWMiOiBbXX1dfSwgeyJ0eXBlIjogImJ1aWx0aW5zLmRpY3QiLCAiY29udGV4dCI6ICJbXSIsICJjaGlsZHJlbl9zcGVjIjog"
            "W119XX1dAAAHAAAAZm9yd2FyZAA=")

    _threads: int | None = None  # ExecuTorch's threadpool is process-wide

    @staticmethod
    def load_runtime():
        """(the bindings module, or the native runner's library; runtime name; version): the bindings where
        torch imports, the torch-free runner where only the wheel is installed; exit 3 where neither is."""
        try:
            importlib.import_module("torch")  # the bindings resolve libtorch's symbols from it
            bindings = importlib.import_module("executorch.extension.pybindings._C")
            return bindings, "executorch", importlib.import_module("executorch.version").__version__
        except (ImportError, OSError):
            pass
        root = pte_native.wheel_root()
        if root is None:
            raise AgentError(f"no ExecuTorch runtime: {pte_native.HOW}", 3)
        return pte_native.load_library(root), "executorch", pte_native.wheel_version(root)

    @classmethod
    def _runtime(cls, threads: int):
        """load_runtime with the threadpool sized to `threads`: once per process, before any program
        loads (resetting it after a method is loaded crashes; the agent times each file in its own processes)."""
        runtime, name, version = cls.load_runtime()
        if cls._threads is None:
            with native_stderr_silenced():
                if isinstance(runtime, ctypes.CDLL):
                    runtime.edgekd_pte_set_threads(threads)
                else:
                    runtime._unsafe_reset_threadpool(threads)
            cls._threads = threads
        return runtime, name, version

    @classmethod
    def noop_run(cls, threads: int) -> None:
        runtime = cls._runtime(threads)[0]
        if isinstance(runtime, ctypes.CDLL):
            with tempfile.TemporaryDirectory(prefix="edgekd-noop-") as tmp:
                Path(tmp, "noop.pte").write_bytes(base64.b64decode(cls.NOOP))
                with native_stderr_silenced():
                    program = pte_native.Program(runtime, Path(tmp, "noop.pte"))
            assert program.run(np.ones((1, 4), np.float32)).tolist() == [2.0] * 4
            return
        torch = importlib.import_module("torch")
        module = runtime._load_for_executorch_from_buffer(base64.b64decode(cls.NOOP))
        assert module.forward((torch.ones(1, 4),))[0].tolist() == [[2.0] * 4]

    def __init__(self, path: Path, threads: int):
        runtime, self.runtime, self.version = self._runtime(threads)
        self.path = path
        self.native = isinstance(runtime, ctypes.CDLL)
        if self.native:
            with native_stderr_silenced():
                self.program = pte_native.Program(runtime, path)
            self.input_shape, self.run = self.program.input_shape, self.program.run
            return
        self._torch = importlib.import_module("torch")
        try:
            with native_stderr_silenced():
                self.module = runtime._load_for_executorch(str(path))
                meta = self.module.method_meta("forward")
        except Exception as exc:  # the bindings raise RuntimeError / ValueError with ExecuTorch's error codes
            raise AgentError(f"{path}: not a loadable ExecuTorch program ({type(exc).__name__}: {exc})") from exc
        self.input_shape = tuple(int(s) for s in meta.input_tensor_meta(0).sizes())

    def prepare(self, x: np.ndarray):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not self.native:
            return self._torch.from_numpy(x)
        if x.shape != self.input_shape:  # the runner reads exactly the program's input size from the pointer
            raise AgentError(f"{self.path}: takes input of shape {self.input_shape}, given {x.shape}")
        return x

    def run(self, prepared):
        return self.module.forward((prepared,))[0]

    def logits(self, raw) -> np.ndarray:
        return raw.reshape(1, -1) if self.native else raw.numpy()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """One sample at a time: a program is specialised to the batch it was exported with."""
        return np.concatenate([self.logits(self.run(self.prepare(x[i:i + 1]))) for i in range(len(x))])

    def profile(self, prepared, warmup: int, runs: int) -> dict:
        """Each op's mean time per run over `runs` runs after `warmup`, from ExecuTorch's ETDump of a
        second load of the program: XNNPACK's own events for the ops inside the delegate (1 µs ticks:
        a mean over many runs resolves less), the runtime's for the ops outside it."""
        if self.native:
            return {"profiler": None, "why": "the ETDump reader needs ExecuTorch's Python package with torch; "
                                             "this device runs the torch-free runner"}
        bindings = self.load_runtime()[0]
        with native_stderr_silenced():  # the deserializer imports ExecuTorch's compiler, which warns
            from executorch.devtools.etdump.serialize import deserialize_from_etdump_flatcc
            traced = bindings._load_for_executorch(str(self.path), enable_etdump=True, debug_buffer_size=0)
            for _ in range(warmup + runs):
                traced.forward((prepared,))
            with tempfile.TemporaryDirectory(prefix="edgekd-etdump-") as tmp:
                traced.write_etdump_result_to_file(f"{tmp}/run.etdp")
                dump = deserialize_from_etdump_flatcc(Path(f"{tmp}/run.etdp").read_bytes())
        blocks = [b for b in dump.run_data if any(e.profile_event and e.profile_event.name == "Method::execute"
                                                  for e in b.events)][-runs:]
        ops: dict[tuple[str, str], float] = defaultdict(float)
        whole, delegate = [], 0.0
        for block in blocks:
            for event in (e.profile_event for e in block.events if e.profile_event):
                ns = event.end_time - event.start_time
                if event.name == "Method::execute":
                    whole.append(ns)
                elif event.name == "DELEGATE_CALL":
                    delegate += ns
                elif event.name is None:  # inside the delegate: "Convolution (NHWC, QC8) IGEMM #2"
                    name = event.delegate_debug_id_str
                    ops[(name, re.sub(r" #\d+$", "", name))] += ns
                else:
                    ops[(f"{event.name} (not delegated)", event.name)] += ns
        return {"profiler": f"ExecuTorch {self.version} ETDump (XNNPACK's events: 1 µs ticks)", "runs": len(blocks),
                "profiled_run_us": float(np.median(whole)) / 1e3, "delegate_call_us": delegate / len(blocks) / 1e3,
                "ops": [{"name": name, "op": op, "us": ns / len(blocks) / 1e3} for (name, op), ns in ops.items()]}
