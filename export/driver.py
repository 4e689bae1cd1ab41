"""The one exporter driver: the set-up, temporary file, parity check, audit and rename that every
format shares. A format contributes only its conversion call (the `FORMATS` table)."""
from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from edgekd.export.common import fold_batchnorm, reference_logits
from edgekd.export.formats import FAMILIES, FORMATS, ExportOptions, ExportResult
from edgekd.export.parity import check, compare
from edgekd.fileio import atomic_path


def export_model(fmt: str, model: nn.Module, sample: torch.Tensor, out_path: Path, options: ExportOptions) -> ExportResult:
    """Convert `model` to format `fmt` at `out_path`, renamed into place only after its own runtime
    agrees with PyTorch on the whole eval set (thresholds by precision, `export.parity`).

    Raises:
        ExportError: the model does not convert (the message names the layer) or the option is unsupported.
        ParityError: the written file disagrees with the model beyond its precision's tolerance.
        MissingDependency: the converter or runtime is not installed.
    """
    spec = FORMATS[fmt]
    start = time.perf_counter()
    model = fold_batchnorm(model)
    reference = reference_logits(model, options.eval_x)
    family = FAMILIES[spec.family]
    layout = family.layout(options)
    with atomic_path(out_path, keep_suffix=True) as tmp:
        spec.convert(model, sample, tmp, options)
        parity = compare(family.run_file(tmp, options.eval_x, layout), reference, options.eval_y, out_path.name)
        check(parity, spec.precision, out_path.name)
        audit = family.audit_file(tmp)
    return ExportResult(out_path, spec.family, spec.precision, parity, audit, time.perf_counter() - start, layout)
