"""The export table: one small function per format behind one signature, and the shared types.

    export_<format>(model, sample, out_path, options) -> ExportResult

Every function writes to a temporary name, runs the file with its own runtime on the eval set,
checks parity against the PyTorch model, and only then renames the file into place.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from edgekd.export.parity import Parity


@dataclass(frozen=True)
class ExportOptions:
    eval_x: np.ndarray  # float32 NCHW, normalised: the parity set
    eval_y: np.ndarray
    calibration_x: np.ndarray | None = None  # float32 NCHW from the train split; int8 formats need it
    onnx_calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    onnx_reduce_range: bool = True  # 7-bit int8 weights: x86 without VNNI cannot saturate on them
    tflite_layout: Literal["nhwc", "nchw"] = "nhwc"
    opset: int = 18
    metadata: dict[str, str] = field(default_factory=dict)  # embedded where the format allows (ONNX metadata_props)


@dataclass
class ExportResult:
    path: Path
    format: Literal["onnx", "tflite"]
    precision: Literal["fp32", "fp16", "int8"]
    parity: Parity
    audit: dict
    seconds: float
    layout: str = "nchw"


ExportFn = Callable[..., ExportResult]


@dataclass(frozen=True)
class Format:
    suffix: str  # artifact name is <model><suffix>
    format: Literal["onnx", "tflite"]
    precision: Literal["fp32", "fp16", "int8"]
    function: str  # "module:function" inside export/, imported on use so each converter loads only when needed


FORMATS: dict[str, Format] = {
    "onnx": Format(".onnx", "onnx", "fp32", "edgekd.export.onnx_format:export_onnx"),
    "onnx_int8": Format(".int8.onnx", "onnx", "int8", "edgekd.export.onnx_format:export_onnx_int8"),
    "tflite": Format(".tflite", "tflite", "fp32", "edgekd.export.tflite_format:export_tflite"),
    "tflite_fp16": Format(".fp16.tflite", "tflite", "fp16", "edgekd.export.tflite_format:export_tflite_fp16"),
    "tflite_int8": Format(".int8.tflite", "tflite", "int8", "edgekd.export.tflite_format:export_tflite_int8"),
}


def exporter(name: str) -> ExportFn:
    """The export function registered for `name`."""
    import importlib

    if name not in FORMATS:
        raise KeyError(f"unknown export format {name!r}; valid: {', '.join(FORMATS)}")
    module, _, fn = FORMATS[name].function.partition(":")
    return getattr(importlib.import_module(module), fn)
