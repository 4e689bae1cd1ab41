"""TFLite files on LiteRT (ai_edge_litert), or on tflite_runtime where only that is installed (older
Raspberry Pi OS images, numpy 1.x). Int8 inputs are quantized and int8 outputs dequantized with the
file's own (scale, zero_point), one sample at a time as on a device."""
from __future__ import annotations

import base64
import importlib
from pathlib import Path

import numpy as np

from edgekd.errors import AgentError

SUFFIXES = (".tflite",)
PACKAGES = ("ai_edge_litert", "tflite_runtime")  # probed in this order
PIP = ("ai-edge-litert", "tflite-runtime")  # what installs each of PACKAGES; the first is the one to suggest


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - zero_point) * np.float32(scale)


class Runner:
    """One LiteRT interpreter; quantizes int8 inputs and dequantizes int8 outputs with the file's own params."""

    # y = x + x on a float32 [1, 4]: a 312-byte model built with LiteRT's flatbuffer schema. Running it
    # loads and warms all a model needs except the model (interpreter, kernels, the XNNPACK delegate).
    NOOP = ("CAAAAFRGTDO+////FAAAABwAAAAsAAAAEAEAAAMAAAABAAAABAAAAPj+//8MAAAAZWRnZWtkIG5vLW9wAAAAAAEAAAAUAAAAAAAOABgAFAAQAAwA"
            "CAAEAA4AAAAUAAAAHAAAAFwAAABgAAAAZAAAAAQAAABtYWluAAAAAAEAAAAUAAAAAAAOABQAAAAQAAwACwAEAA4AAAAQAAAAAAAACwwAAAAQAAAA"
            "eP///wEAAAABAAAAAgAAAAAAAAAAAAAAAQAAAAEAAAABAAAAAAAAAAIAAAA0AAAABAAAAOD///8IAAAADAAAAAEAAAB5AAAAAgAAAAEAAAAEAAAA"
            "DAAMAAgAAAAAAAQADAAAAAgAAAAMAAAAAQAAAHgAAAACAAAAAQAAAAQAAAABAAAACAAAAAQABAAEAAAA")

    @staticmethod
    def load_runtime():
        """(Interpreter class, runtime name, version); exit 3 when no TFLite runtime is installed."""
        for name in PACKAGES:
            try:
                interpreter = importlib.import_module(f"{name}.interpreter").Interpreter
            except ImportError:
                continue
            return interpreter, name, getattr(importlib.import_module(name), "__version__", "unknown")
        raise AgentError(f"no TFLite runtime: pip install {PIP[0]} (or {PIP[1]} on older Raspberry Pi OS images)", 3)

    @classmethod
    def noop_run(cls, threads: int) -> None:
        """Create, run and drop an interpreter of the NOOP model (raises if the runtime cannot)."""
        interpreter, _, _ = cls.load_runtime()
        interp = interpreter(model_content=base64.b64decode(cls.NOOP), num_threads=threads)
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], np.ones((1, 4), np.float32))
        interp.invoke()
        assert interp.get_tensor(interp.get_output_details()[0]["index"]).tolist() == [[2.0] * 4]

    def __init__(self, path: Path, threads: int):
        interpreter, self.runtime, self.version = self.load_runtime()
        self.path, self.threads = path, threads
        try:
            self.interp = interpreter(model_path=str(path), num_threads=threads)
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise AgentError(f"{path}: not a loadable TFLite model ({exc})") from exc
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        self.input_shape = tuple(int(v) for v in self.inp["shape"])

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Float32 batch of one -> the tensor the model takes (int8 quantized when it is int8)."""
        if self.inp["dtype"] != np.float32:
            scale, zero = self.inp["quantization"]
            return quantize(x, scale, zero, self.inp["dtype"])
        return x.astype(np.float32, copy=False)

    def run(self, prepared: np.ndarray) -> np.ndarray:
        self.interp.set_tensor(self.inp["index"], prepared)
        self.interp.invoke()
        return self.interp.get_tensor(self.out["index"])

    def logits(self, raw: np.ndarray) -> np.ndarray:
        if self.out["dtype"] != np.float32:
            scale, zero = self.out["quantization"]
            return dequantize(raw, scale, zero)
        return raw

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self.logits(self.run(self.prepare(x[i:i + 1]))) for i in range(len(x))])

    def profile(self, prepared, warmup: int, runs: int) -> dict:
        """Each op's mean time per run over `runs` runs after `warmup`, from LiteRT's profiler through its C
        API (litert_profile), in a second load of the file: XNNPACK's own events for the ops inside the
        delegate (1 µs ticks), TFLite's for the ops outside it."""
        if self.runtime != "ai_edge_litert":
            return {"profiler": None, "why": f"{self.runtime} has no op profiler; ai-edge-litert has "
                                             f"(pip install {PIP[0]})"}
        from edgekd.bench.agent.runtimes import litert_profile, native_stderr_silenced

        library = Path(importlib.import_module("ai_edge_litert").__file__).parent / "libLiteRt.so"
        with native_stderr_silenced():
            found = litert_profile.profile(library, self.path, prepared, warmup, runs, self.threads)
        return {"profiler": f"LiteRT {self.version} profiler through its C API (XNNPACK's events: 1 µs ticks)",
                **found}
