"""The export stage: every (model, format) in the config becomes a file under export/, with a sidecar.

Each file is checked against its PyTorch model by the exporter before it is renamed into place;
this stage then judges int8 files' accuracy drop (paired, `export.max_int8_drop`) and writes
`<artifact>.json` beside each file: its input/output tensors, normalisation, labels, source
checkpoint, parity, int8 check and audit.

Files are cached one by one: a file whose checkpoint, calibration set and format options are
unchanged (its sidecar's `cache_key`) is kept, so a failing file or a new `max_int8_drop` never
re-converts the others.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from edgekd import __version__
from edgekd.errors import CheckFailed
from edgekd.export.driver import export_model
from edgekd.export.formats import FORMATS, ExportOptions
from edgekd.export.parity import Parity, int8_drop_check
from edgekd.fileio import sha256_file, sha256_json, write_json
from edgekd.pipeline.config import DataConfig
from edgekd.pipeline.stages.context import StageContext, StageResult
from edgekd.pipeline.stages.int8 import Int8Maker
from edgekd.pipeline.training.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

SIDECAR_SCHEMA = "edgekd.sidecar/1"
ARTIFACT_KEYS = ("file", "model", "format", "precision", "size_bytes", "sha256", "parity", "audit", "int8_check",
                 "export_seconds", "int8_method", "quantization")


def _cache_key(fmt: str, ckpt_sha: str, calibration_sha: str, options: ExportOptions, method: dict) -> str:
    spec = FORMATS[fmt]
    return sha256_json({"format": fmt, "checkpoint": ckpt_sha, "edgekd": __version__, "metadata": options.metadata,
                        "calibration": calibration_sha if spec.calibration else None,
                        "options": {k: getattr(options, k) for k in spec.options},
                        **(method if spec.precision == "int8" else {})})


def _cached(path: Path, key: str) -> dict | None:
    """The sidecar of a file exported earlier with the same inputs, if the file is still what it recorded."""
    side = path.with_name(path.name + ".json")
    try:
        sidecar = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if sidecar.get("cache_key") != key or not path.exists() or sha256_file(path) != sidecar.get("sha256"):
        return None
    return sidecar


def _sidecar(ctx: StageContext, model: str, fmt: str, result, options: ExportOptions, *, ckpt_sha: str, key: str,
             data_meta: dict, quantization: dict | None) -> dict:
    spec, path = FORMATS[fmt], result.path
    io = spec.io_signature(path)
    io["input"]["layout"] = result.layout
    return {
        "schema": SIDECAR_SCHEMA, "file": ctx.layout.rel(path), "model": model, "format": result.format,
        "precision": result.precision, **io,
        "normalization": {**json.loads(data_meta["edgekd.normalization"]), "formula": "x = (raw / pixel_max - mean) / std per channel, then int8 input "
                                             "quantization with input.quantization when the input is int8"},
        "labels": json.loads(data_meta["edgekd.labels"]),
        "preprocess": preprocess(ctx.cfg.data, io["input"], result.layout),
        "source_checkpoint": ctx.layout.rel(ctx.layout.checkpoint(model)), "source_checkpoint_sha256": ckpt_sha,
        "calibration": ({"samples": ctx.cfg.export.calibration_samples, "split": "train", **spec.calibration(options)}
                        if spec.calibration else None),
        "size_bytes": path.stat().st_size, "sha256": sha256_file(path), "cache_key": key,
        "parity": result.parity.to_dict(), "audit": result.audit, "export_seconds": round(result.seconds, 2),
        "int8_method": quantization["int8_method"] if quantization else None, "quantization": quantization,
    }


def _failure(name: str, parity: Parity, check, sidecar: dict) -> str:
    tried = ", ".join(f"{a['method']} {a['accuracy']:.2%}" for a in (sidecar.get("quantization") or {}).get("attempts", []))
    fixes = ("set export.int8_method = 'auto' or 'qat' (quantization-aware training), " if "qat" not in tried
             else "train QAT longer (export.qat.epochs), ")
    if "mixed" not in tried:
        fixes += "export.int8_fallback = true (the most sensitive layers in float), "
    return (f"{name}: the best int8 file found ({sidecar.get('int8_method') or 'ptq'}; tried: {tried or 'ptq'}) is kept, "
            f"but not enough: {parity.accuracy:.2%} vs fp32 {parity.reference_accuracy:.2%}: {check.describe()}. Try: "
            f"{fixes}more calibration samples (export.calibration_samples), export.onnx_calibration = 'entropy' or "
            "'percentile', or drop this format from export.formats")


def preprocess(data: DataConfig, tensor: dict, layout: str) -> dict:
    """How an app turns an image file into this file's input: channels and their order, resize, layout.
    Image folders are read as 8-bit RGB (or gray) and resized bilinearly to data.image_size (stretched, or
    scaled to cover it and centre-cropped: data.resize); the other
    datasets come as arrays, whose channel order is the user's."""
    channels = tensor["shape"][3 if layout == "nhwc" else 1]
    order = "gray" if channels == 1 else "RGB" if data.dataset == "folder" and channels == 3 else "as in the dataset"
    resize = ({"method": "bilinear", "height": data.image_size[0], "width": data.image_size[1],
               "crop": "center" if data.resize == "crop" else None}
              if data.dataset == "folder" and data.image_size else None)
    return {"channels": channels, "channel_order": order, "resize": resize, "layout": layout}


def data_metadata(ctx: StageContext) -> dict[str, str]:
    """What every exported file carries about its data (ONNX embeds it in metadata_props)."""
    with np.load(ctx.layout.eval_set) as f:
        norm = {"mean": f["mean"].tolist(), "std": f["std"].tolist(), "pixel_max": float(f["pixel_max"])}
        labels = f["labels"].tolist()
    return {"edgekd.labels": json.dumps(labels), "edgekd.normalization": json.dumps(norm)}


def export_models(ctx: StageContext) -> StageResult:
    """Export the configured models to the configured formats; fail (exit 1) on an int8 drop beyond the limit."""
    layout, e = ctx.layout, ctx.cfg.export
    with np.load(layout.eval_set) as f:
        eval_x, eval_y = f["x"], f["y"]
    with np.load(layout.calibration) as f:
        calib_x = f["x"]
    calibration_sha = sha256_file(layout.calibration)
    data_meta = data_metadata(ctx)
    outputs: list[Path] = []
    artifacts, failures, reused = [], [], 0
    int8 = Int8Maker(ctx)
    for model_name in e.models:
        ckpt = layout.checkpoint(model_name)
        ckpt_sha = sha256_file(ckpt)
        options = ExportOptions(eval_x, eval_y, calibration_x=calib_x, onnx_calibration=e.onnx_calibration,
                                onnx_reduce_range=e.onnx_reduce_range, tflite_layout=e.tflite_layout, opset=e.opset,
                                metadata={"edgekd.model": model_name, **data_meta,
                                          "edgekd.source_checkpoint_sha256": ckpt_sha})
        model = spec = None
        for fmt in e.formats:
            path = layout.export_file(model_name, fmt)
            is_int8 = FORMATS[fmt].precision == "int8"
            key = _cache_key(fmt, ckpt_sha, calibration_sha, options, int8.key_inputs(model_name) if is_int8 else {})
            sidecar = _cached(path, key)
            if sidecar is None:
                if model is None:
                    model, spec = load_checkpoint(ckpt)
                sample = torch.zeros(1, *spec.in_shape)
                result, quantization = (int8.make(model_name, fmt, model, sample, options) if is_int8
                                        else (export_model(fmt, model, sample, path, options), None))
                sidecar = _sidecar(ctx, model_name, fmt, result, options, ckpt_sha=ckpt_sha, key=key,
                                   data_meta=data_meta, quantization=quantization)
                log.info("export %s: %.1f KiB in %.1f s, accuracy %.2f%% (PyTorch %.2f%%), top-1 agreement %.2f%%, "
                         "max |Δ| %.1e, %s", path.name, sidecar["size_bytes"] / 1024, result.seconds,
                         100 * result.parity.accuracy, 100 * result.parity.reference_accuracy,
                         100 * result.parity.top1_agreement, result.parity.max_abs_diff, result.audit["kind"])
            else:
                reused += 1
                log.info("export %s: unchanged inputs, kept (sha256 %s...)", path.name, sidecar["sha256"][:12])
            parity = Parity(**sidecar["parity"])
            check = int8_drop_check(parity, e.max_int8_drop) if sidecar["precision"] == "int8" else None
            sidecar["int8_check"] = check.to_dict() if check else None
            side_path = layout.sidecar(path)
            write_json(side_path, sidecar)  # kept even when it fails: the best int8 file found, with its numbers
            if check and check.verdict == "fail":
                failures.append(_failure(path.name, parity, check, sidecar))
                continue
            if check and check.verdict == "cannot tell":
                log.warning("%s: kept, but the eval set cannot tell whether int8 stays within export.max_int8_drop: %s",
                            path.name, check.describe())
            outputs += [path, side_path]
            artifacts.append({k: sidecar.get(k) for k in ARTIFACT_KEYS})
    if failures:
        raise CheckFailed("export: int8 accuracy check failed (every file is kept, the failing ones as the best int8 "
                          "file found, and none will be converted again while its inputs are unchanged):\n"
                          + "\n".join(f"  - {f}" for f in failures))
    return StageResult(outputs, {"artifacts": artifacts, "reused_files": reused})
