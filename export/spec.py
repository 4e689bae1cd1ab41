"""What a model format declares about itself (`Format`), and what a conversion takes (`ExportOptions`)
and gives (`ExportResult`).

A format family module (onnx_format.py, tflite_format.py) defines its `Format` objects; the one table
of them is `export.formats.FORMATS`. This module imports no converter, runtime or torch: the table
is read by the CLI's --help and by config validation.
"""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np

from edgekd.export.parity import THRESHOLDS, Parity, Precision

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class ExportOptions:
    eval_x: np.ndarray  # float32 NCHW, normalised: the parity set
    eval_y: np.ndarray
    _: KW_ONLY  # the options by name: eight positional values are easy to pass in the wrong order
    calibration_x: np.ndarray | None = None  # float32 NCHW from the train split; formats with `calibration` need it
    onnx_calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    onnx_reduce_range: bool = True  # 7-bit int8 weights: x86 without VNNI cannot saturate on them
    tflite_layout: Literal["nhwc", "nchw"] = "nhwc"
    opset: int = 18
    metadata: dict[str, str] = field(default_factory=dict)  # embedded where the format allows (ONNX metadata_props)
    # int8 formats: the model's layers (module paths, e.g. "features.3") kept in float (export.int8_fallback)
    float_layers: tuple[str, ...] = ()


@dataclass
class ExportResult:
    path: Path
    format: str  # the runtime that runs the file (Format.runtime): the sidecar's and the report's "format"
    precision: Precision
    parity: Parity
    audit: dict
    seconds: float
    layout: str = "nchw"


@dataclass(frozen=True, kw_only=True)
class Format:
    """Everything edgekd needs to write, check, audit and run one format. The functions import their
    converter or runtime when called, so declaring a format costs nothing."""

    name: str  # its key in FORMATS and in export.formats
    suffix: str  # artifact name is <model><suffix>
    runtime: str  # the agent's runtime that runs it (edgekd.bench.agent's runtime table): "onnx", "tflite"
    precision: Precision
    help: str  # one line for --help
    convert: Callable[[nn.Module, torch.Tensor, Path, ExportOptions], None]  # writes the file at the path
    audit: Callable[[Path], dict]  # what the written file really is, op by op (export.audit)
    io_signature: Callable[[Path], dict]  # {"input": ..., "output": ...}: name, shape, dtype, quantization
    options: tuple[str, ...] = ()  # the ExportOptions fields `convert` reads (part of the file's cache key)
    layout_option: str | None = None  # the ExportOptions field that sets the input layout; None: always NCHW
    # formats calibrated on train samples: how they use them (the sidecar's "calibration" entries beside
    # "samples" and "split"); None: the format needs no calibration data
    calibration: Callable[[ExportOptions], dict] | None = None
    parity: tuple[float, float | None] | None = None  # (min top-1 agreement, max |Δlogit|); None: its precision's
    # int8 formats only: write the file from a quantization-aware trained model (export.qat.QatNet) and the
    # eager fp32 model it was trained from; None: the format has no QAT path
    convert_qat: Callable[[nn.Module, nn.Module, torch.Tensor, Path, ExportOptions], None] | None = None
    # int8 formats whose converter honours ExportOptions.float_layers (the accuracy-aware fallback)
    float_layers: bool = False

    def layout(self, options: ExportOptions) -> str:
        return getattr(options, self.layout_option) if self.layout_option else "nchw"

    @property
    def tolerance(self) -> tuple[float, float | None]:
        return self.parity or THRESHOLDS[self.precision]

    def run(self, path: Path, x: np.ndarray, layout: str) -> np.ndarray:
        """Logits of `x` (float32 NCHW) through the file's own runtime."""
        from edgekd.export.runtimes import run

        return run(self.runtime, path, x, layout)
