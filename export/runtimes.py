"""Run an exported file with its own runtime on float32 NCHW inputs and return float32 logits.

Int8 TFLite models take int8 inputs and give int8 outputs: inputs are quantized and outputs
dequantized with the (scale, zero_point) read from the tensor details, never assumed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from export.errors import ExportError, RuntimeMissing


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - zero_point) * np.float32(scale)


def tflite_interpreter(path: Path, threads: int = 1, delegates: bool = True):
    """A LiteRT interpreter with tensors allocated; `delegates=False` keeps the graph as the file has it."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise RuntimeMissing("the LiteRT runtime is not installed; pip install ai-edge-litert") from None
    resolver = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interp = Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ExportError(f"{path}: not a loadable TFLite model ({exc}); re-export it "
                          "(edgekd run CONFIG --force export)") from exc
    return interp


def onnx_session(path: Path, threads: int = 1):
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeMissing("ONNX Runtime is not installed; pip install onnxruntime") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise ExportError(f"{path}: not a loadable ONNX model ({type(exc).__name__}: {exc}); re-export it "
                          "(edgekd run CONFIG --force export)") from exc


def run_tflite(path: Path, x: np.ndarray, layout: str) -> np.ndarray:
    """Logits for every sample of `x` (float32 NCHW), one sample at a time as on a device."""
    interp = tflite_interpreter(path)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    if layout == "nhwc":
        x = x.transpose(0, 2, 3, 1)
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    if tuple(inp["shape"][1:]) != x.shape[1:]:
        raise ExportError(f"{path}: expects input shape {list(inp['shape'])}, got samples of shape "
                          f"{list(x.shape[1:])} ({layout}); check export.tflite_layout")
    logits = []
    for sample in x:
        batch = sample[None]
        if inp["dtype"] != np.float32:
            batch = quantize(batch, in_scale, in_zero, inp["dtype"])
        interp.set_tensor(inp["index"], batch.astype(inp["dtype"], copy=False))
        interp.invoke()
        y = interp.get_tensor(out["index"])
        logits.append(dequantize(y, out_scale, out_zero) if out["dtype"] != np.float32 else y.copy())
    return np.concatenate(logits).astype(np.float32)


def run_onnx(path: Path, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    session = onnx_session(path)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + batch_size]})[0]
                           for i in range(0, len(x), batch_size)]).astype(np.float32)
