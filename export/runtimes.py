"""Run an exported file with its own runtime on float32 NCHW inputs and return float32 logits.

Parity uses the benchmark agent's own runners (edgekd.bench.agent.runtimes), so the accuracy the export stage
records and the accuracy the agent measures on a device come from the same code: int8 inputs are
quantized and outputs dequantized with the file's (scale, zero_point), one sample at a time.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.bench.agent.runtimes import runtime_module
from edgekd.errors import AgentError, ExportError, MissingDependency


def _open(runtime: str, path: Path):
    """The agent's runner of `runtime` ("tflite", "onnx") on `path`, one thread. A missing runtime stays
    the agent's error (exit 3, with its pip hint); a file it cannot load is an ExportError (exit 2)."""
    try:
        return runtime_module(runtime).Runner(path, 1)
    except AgentError as exc:
        if exc.exit_code == 3:
            raise
        raise ExportError(f"{exc}; re-export it (edgekd run CONFIG --force export)") from None


def run(runtime: str, path: Path, x: np.ndarray, layout: str = "nchw") -> np.ndarray:
    """Logits for every sample of `x` (float32 NCHW) from the agent's runner of `runtime` ("tflite",
    "onnx"), fed in `layout` ("nhwc": transposed) as on a device."""
    runner = _open(runtime, path)
    if layout == "nhwc":
        x = x.transpose(0, 2, 3, 1)
    want = tuple(runner.input_shape[1:])
    if want != x.shape[1:] and min(want, default=1) >= 1:  # a dynamic (-1) dimension takes any size
        raise ExportError(f"{path}: expects input shape {list(runner.input_shape)}, got samples of shape "
                          f"{list(x.shape[1:])} ({layout}); check the format's layout option (export.tflite_layout)")
    return runner.predict(x).astype(np.float32)


def tflite_interpreter(path: Path):
    """A LiteRT interpreter without the default XNNPACK delegate, so the graph reads as the file has it."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise MissingDependency("the LiteRT runtime is not installed; pip install ai-edge-litert") from None
    try:
        interp = Interpreter(model_path=str(path),
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ExportError(f"{path}: not a loadable TFLite model ({exc}); re-export it "
                          "(edgekd run CONFIG --force export)") from exc
    return interp
