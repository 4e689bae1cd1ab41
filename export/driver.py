"""The one exporter driver: the set-up, temporary file, parity check, audit and rename that every
format shares. What differs by format (conversion, runtime, tolerance, audit) its `Format` declares
(the `FORMATS` table)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from edgekd.errors import ExportError
from edgekd.export.common import fold_batchnorm, reference_logits
from edgekd.export.formats import FORMATS, ExportOptions, ExportResult
from edgekd.export.parity import check, compare
from edgekd.fileio import atomic_path

if TYPE_CHECKING:
    import torch
    from torch import nn


def export_model(fmt: str, model: nn.Module, sample: torch.Tensor, out_path: Path, options: ExportOptions,
                 qat_net: nn.Module | None = None) -> ExportResult:
    """Convert `model` to format `fmt` at `out_path`, renamed into place only after its own runtime
    agrees with PyTorch on the whole eval set (the format's tolerance, by default its precision's:
    `export.parity`). With `qat_net` (a quantization-aware trained copy of `model`, export.qat) an
    int8 format writes the file from it; parity is still against `model`, the fp32 model.

    Raises:
        ExportError: the model does not convert (the message names the layer) or the option is unsupported.
        ParityError: the written file disagrees with the model beyond its format's tolerance.
        MissingDependency: the converter or runtime is not installed.
    """
    spec = FORMATS[fmt]
    if spec.calibration and (options.calibration_x is None or not len(options.calibration_x)):
        raise ExportError(f"{fmt} needs calibration samples (export.calibration_samples > 0)")
    if qat_net is not None and spec.convert_qat is None:
        raise ExportError(f"{fmt} has no quantization-aware path; only int8 formats do")
    start = time.perf_counter()
    folded = fold_batchnorm(model)
    reference = reference_logits(folded, options.eval_x)
    layout = spec.layout(options)
    with atomic_path(out_path, keep_suffix=True) as tmp:
        if qat_net is None:
            spec.convert(folded, sample, tmp, options)
        else:
            spec.convert_qat(qat_net, model, sample, tmp, options)
        parity = compare(spec.run(tmp, options.eval_x, layout), reference, options.eval_y, out_path.name)
        check(parity, spec.tolerance, spec.precision, out_path.name)
        audit = spec.audit(tmp)
    return ExportResult(out_path, spec.runtime, spec.precision, parity, audit, time.perf_counter() - start, layout)
