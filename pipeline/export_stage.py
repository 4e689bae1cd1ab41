"""The export stage: every (model, format) in the config becomes a file under export/, with a sidecar.

Each exporter checks parity against the PyTorch model before it renames its file into place;
this stage then holds int8 files to `export.max_int8_drop` and writes `<artifact>.json` beside each
file: its input/output tensors, normalisation, labels, source checkpoint, parity and audit.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from edgekd.export.audit import io_signature
from edgekd.export.formats import FORMATS, ExportOptions
from edgekd.export.driver import export_model
from edgekd.export.parity import Int8Check, int8_drop_check
from edgekd.pipeline.checkpoint import load_checkpoint
from edgekd.errors import CheckFailed
from edgekd.fileio import sha256_file, write_json
from edgekd.pipeline.stage import StageContext, StageResult

log = logging.getLogger(__name__)


def _sidecar(run_dir: Path, name: str, result, ckpt_sha: str, ctx: StageContext, int8: Int8Check | None) -> dict:
    io = io_signature(result.path)
    io["input"]["layout"] = result.layout
    e = ctx.cfg.export
    return {
        "schema": "edgekd.sidecar/1", "file": str(result.path.relative_to(run_dir)), "model": name,
        "format": result.format, "precision": result.precision, **io,
        "normalization": {"mean": ctx.data.mean.tolist(), "std": ctx.data.std.tolist(), "pixel_max": ctx.data.pixel_max,
                          "formula": "x = (raw / pixel_max - mean) / std per channel, then int8 input quantization "
                                     "with input.quantization when the input is int8"},
        "labels": ctx.data.labels,
        "source_checkpoint": f"{name}.pt", "source_checkpoint_sha256": ckpt_sha,
        "calibration": ({"samples": e.calibration_samples, "split": "train",
                         "method": e.onnx_calibration if result.format == "onnx" else "minmax",
                         **({"reduce_range": e.onnx_reduce_range} if result.format == "onnx" else {})}
                        if result.precision == "int8" else None),
        "int8_check": int8.to_dict() if int8 else None,
        "size_bytes": result.path.stat().st_size, "sha256": sha256_file(result.path),
        "parity": result.parity.to_dict(), "audit": result.audit, "export_seconds": round(result.seconds, 2),
    }


def export_models(ctx: StageContext) -> StageResult:
    """Export the configured models to the configured formats; fail (exit 1) on an int8 accuracy drop."""
    run_dir, e = ctx.run_dir, ctx.cfg.export
    with np.load(run_dir / "data" / "eval.npz") as f:
        eval_x, eval_y = f["x"], f["y"]
    with np.load(run_dir / "data" / "calibration.npz") as f:
        calib_x = f["x"]
    outputs: list[Path] = []
    artifacts, failures = [], []
    for name in e.models:
        ckpt = run_dir / f"{name}.pt"
        model, spec = load_checkpoint(ckpt)
        ckpt_sha = sha256_file(ckpt)
        metadata = {"edgekd.model": name, "edgekd.labels": json.dumps(ctx.data.labels),
                    "edgekd.normalization": json.dumps({"mean": ctx.data.mean.tolist(), "std": ctx.data.std.tolist(),
                                                        "pixel_max": ctx.data.pixel_max}),
                    "edgekd.source_checkpoint_sha256": ckpt_sha}
        options = ExportOptions(eval_x, eval_y, calib_x, e.onnx_calibration, e.onnx_reduce_range, e.tflite_layout,
                                e.opset, metadata)
        sample = torch.zeros(1, *spec.in_shape)
        for fmt in e.formats:
            path = run_dir / "export" / f"{name}{FORMATS[fmt].suffix}"
            result = export_model(fmt, model, sample, path, options)
            p = result.parity
            log.info("export %s: %.1f KiB in %.1f s, accuracy %.2f%% (PyTorch %.2f%%), top-1 agreement %.2f%%, "
                     "max |Δ| %.1e, %s", path.name, path.stat().st_size / 1024, result.seconds, 100 * p.accuracy,
                     100 * p.reference_accuracy, 100 * p.top1_agreement, p.max_abs_diff, result.audit["kind"])
            int8 = int8_drop_check(p, e.max_int8_drop) if result.precision == "int8" else None
            if int8 and int8.failed:
                path.unlink()
                failures.append(f"{path.name}: int8 accuracy {p.accuracy:.2%} vs fp32 {p.reference_accuracy:.2%}: "
                                f"{int8.describe()}; allowed {100 * e.max_int8_drop:.2f} points. Try more calibration "
                                "samples (export.calibration_samples) or another method (export.onnx_calibration = "
                                "'entropy' or 'percentile'), or drop this format from export.formats")
                continue
            if int8 and int8.drop > e.max_int8_drop:
                log.warning("%s: %s exceeds export.max_int8_drop = %.2f points, but this eval set cannot tell it "
                            "from noise; kept", path.name, int8.describe(), 100 * e.max_int8_drop)
            sidecar = _sidecar(run_dir, name, result, ckpt_sha, ctx, int8)
            side_path = path.with_name(path.name + ".json")
            write_json(side_path, sidecar)
            outputs += [path, side_path]
            artifacts.append({k: sidecar[k] for k in ("file", "model", "format", "precision", "size_bytes", "sha256",
                                                      "parity", "audit", "int8_check", "export_seconds")})
    if failures:
        raise CheckFailed("export: int8 accuracy check failed:\n" + "\n".join(f"  - {f}" for f in failures))
    return StageResult(outputs, {"artifacts": artifacts})
