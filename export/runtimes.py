"""Run an exported file with its own runtime on float32 NCHW inputs and return float32 logits.

Parity uses the benchmark agent's own runners (bench/agent.py), so the accuracy the export stage
records and the accuracy the agent measures on a device come from the same code: int8 inputs are
quantized and outputs dequantized with the file's (scale, zero_point), one sample at a time.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.bench.agent import AgentError, ONNXRunner, TFLiteRunner
from edgekd.errors import ExportError, MissingDependency


def _open(runner: type, path: Path):
    try:
        return runner(path, 1)
    except AgentError as exc:
        if exc.exit_code == 3:
            raise MissingDependency(str(exc)) from None
        raise ExportError(f"{exc}; re-export it (edgekd run CONFIG --force export)") from None


def run_tflite(path: Path, x: np.ndarray, layout: str) -> np.ndarray:
    """Logits for every sample of `x` (float32 NCHW), one sample at a time as on a device."""
    runner = _open(TFLiteRunner, path)
    if layout == "nhwc":
        x = x.transpose(0, 2, 3, 1)
    if tuple(runner.input_shape[1:]) != x.shape[1:]:
        raise ExportError(f"{path}: expects input shape {list(runner.input_shape)}, got samples of shape "
                          f"{list(x.shape[1:])} ({layout}); check export.tflite_layout")
    return runner.predict(x).astype(np.float32)


def run_onnx(path: Path, x: np.ndarray, layout: str = "nchw") -> np.ndarray:
    return _open(ONNXRunner, path).predict(x).astype(np.float32)


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
