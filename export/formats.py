"""The export table: every format's suffix, family, precision and conversion function, and the types
they share. Everything that needs "which format is this file" asks this table (`format_of`).

    FORMATS[name].convert(model, sample, path, options) -> None   # writes the file at `path`

The shared work (BatchNorm folding, reference logits, temporary file, parity on the eval set, audit,
rename into place) is done once, by `export.driver.export_model`.
"""
from __future__ import annotations

import importlib
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from edgekd.errors import ExportError
from edgekd.export.parity import Parity


@dataclass(frozen=True)
class ExportOptions:
    eval_x: np.ndarray  # float32 NCHW, normalised: the parity set
    eval_y: np.ndarray
    _: KW_ONLY  # the options by name: eight positional values are easy to pass in the wrong order
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


def _lazy(ref: str) -> Callable:
    """"module:function" inside edgekd.export, imported on use so each converter loads only when needed."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(f"edgekd.export.{module}"), name)


@dataclass(frozen=True)
class Family:
    """What all files of one container format share: how to run one, audit one, and its input layout."""

    run: str  # (path, x NCHW float32, layout) -> logits
    audit: str  # (path) -> dict
    layout_option: str | None  # the ExportOptions field that sets the file's input layout; None: always NCHW

    def layout(self, options: ExportOptions) -> str:
        return getattr(options, self.layout_option) if self.layout_option else "nchw"

    def run_file(self, path: Path, x: np.ndarray, layout: str) -> np.ndarray:
        return _lazy(self.run)(path, x, layout)

    def audit_file(self, path: Path) -> dict:
        return _lazy(self.audit)(path)


FAMILIES: dict[str, Family] = {
    "onnx": Family("runtimes:run_onnx", "audit:audit_onnx", None),
    "tflite": Family("runtimes:run_tflite", "audit:audit_tflite", "tflite_layout"),
}


@dataclass(frozen=True)
class Format:
    suffix: str  # artifact name is <model><suffix>
    family: Literal["onnx", "tflite"]
    precision: Literal["fp32", "fp16", "int8"]
    converter: str  # "module:function" in edgekd.export
    options: tuple[str, ...]  # the ExportOptions fields the conversion reads (part of the file's cache key)

    def convert(self, *args) -> None:
        _lazy(self.converter)(*args)


FORMATS: dict[str, Format] = {
    "onnx": Format(".onnx", "onnx", "fp32", "onnx_format:convert_onnx", ("opset",)),
    "onnx_int8": Format(".int8.onnx", "onnx", "int8", "onnx_format:convert_onnx_int8",
                        ("opset", "onnx_calibration", "onnx_reduce_range")),
    "tflite": Format(".tflite", "tflite", "fp32", "tflite_format:convert_tflite", ("tflite_layout",)),
    "tflite_fp16": Format(".fp16.tflite", "tflite", "fp16", "tflite_format:convert_tflite_fp16", ("tflite_layout",)),
    "tflite_int8": Format(".int8.tflite", "tflite", "int8", "tflite_format:convert_tflite_int8", ("tflite_layout",)),
}


def format_of(path: Path) -> str:
    """The format name of a model file, by its longest matching suffix; ExportError for any other file."""
    matches = [name for name, f in FORMATS.items() if path.name.endswith(f.suffix)]
    if not matches:
        raise ExportError(f"{path}: not a model file edgekd knows; expected a name ending in one of "
                          f"{', '.join(f.suffix for f in FORMATS.values())}")
    return max(matches, key=lambda name: len(FORMATS[name].suffix))


def is_model_file(path: Path) -> bool:
    return any(path.name.endswith(f.suffix) for f in FORMATS.values())


def family_of(path: Path) -> Family:
    return FAMILIES[FORMATS[format_of(path)].family]


def run_file(path: Path, x: np.ndarray, layout: str) -> np.ndarray:
    """Logits of `x` (float32 NCHW) through the file's own runtime."""
    return family_of(path).run_file(path, x, layout)
