"""The format table: every model format edgekd writes, by the name export.formats uses. A format is
one `Format` object, declared in its family's module (onnx_format.py, tflite_format.py, pte_format.py) with its
suffix, runtime, precision, conversion, audit, I/O signature, options and calibration; adding one is
that object and one row here.

    FORMATS[name].convert(model, sample, path, options) -> None   # writes the file at `path`

The shared work (BatchNorm folding, reference logits, temporary file, parity on the eval set, audit,
rename into place) is done once, by `export.driver.export_model`. Everything that needs "which
format is this file" asks this table (`format_of`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.errors import ExportError
from edgekd.export import onnx_format, pte_format, tflite_format
from edgekd.export.spec import ExportOptions, ExportResult, Format

__all__ = ["FORMATS", "ExportOptions", "ExportResult", "Format", "format_of", "formats_help", "is_model_file",
           "run_file"]

FORMATS: dict[str, Format] = {
    "onnx": onnx_format.ONNX,
    "onnx_int8": onnx_format.ONNX_INT8,
    "tflite": tflite_format.TFLITE,
    "tflite_fp16": tflite_format.TFLITE_FP16,
    "tflite_int8": tflite_format.TFLITE_INT8,
    "pte": pte_format.PTE,
    "pte_int8": pte_format.PTE_INT8,
}
assert all(name == f.name for name, f in FORMATS.items()), "each row's key is its format's name"


def format_of(path: Path) -> str:
    """The format name of a model file, by its longest matching suffix; ExportError for any other file."""
    matches = [name for name, f in FORMATS.items() if path.name.endswith(f.suffix)]
    if not matches:
        raise ExportError(f"{path}: not a model file edgekd knows; expected a name ending in one of "
                          f"{', '.join(f.suffix for f in FORMATS.values())}")
    return max(matches, key=lambda name: len(FORMATS[name].suffix))


def is_model_file(path: Path) -> bool:
    return any(path.name.endswith(f.suffix) for f in FORMATS.values())


def run_file(path: Path, x: np.ndarray, layout: str) -> np.ndarray:
    """Logits of `x` (float32 NCHW) through the file's own runtime."""
    return FORMATS[format_of(path)].run(path, x, layout)


def formats_help() -> str:
    """Each format with its help line, for --help: "onnx (fp32 ONNX); onnx_int8 (...); ..."."""
    return "; ".join(f"{name} ({f.help})" for name, f in FORMATS.items())
