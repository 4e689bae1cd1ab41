"""TFLite via litert-torch: fp32, fp16 weights, and full-integer int8 (PT2E static, per-channel).

`tflite_layout = "nhwc"` (the mobile convention, default) wraps the model so the file takes
(1, H, W, C) inputs; "nchw" keeps PyTorch's layout.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.export.audit import audit_tflite
from edgekd.export.common import explain_failure, fold_batchnorm, quiet_converter, reference_logits, temp_file
from edgekd.errors import ExportError, MissingDependency
from edgekd.export.formats import ExportOptions, ExportResult
from edgekd.export.parity import check, compare
from edgekd.export.runtimes import run_tflite

log = logging.getLogger(__name__)


def _litert():
    try:
        with quiet_converter():
            import litert_torch
    except ImportError:
        raise MissingDependency("TFLite export needs litert-torch; pip install litert-torch") from None
    return litert_torch


def _io_model(model: nn.Module, sample: torch.Tensor, layout: str) -> tuple[nn.Module, torch.Tensor]:
    """The model and sample as the file will see them (channels last for nhwc)."""
    if layout == "nchw":
        return model, sample
    return _litert().to_channel_last_io(model, args=[0]).eval(), sample.permute(0, 2, 3, 1).contiguous()


def _convert(model: nn.Module, sample: torch.Tensor, path: Path, what: str,
             source: tuple[nn.Module, torch.Tensor], **kwargs) -> None:
    """Convert and write; on failure name the layer in `source` (the user's model, not our NHWC wrapper)."""
    litert_torch = _litert()
    try:
        with quiet_converter():
            litert_torch.convert(model, (sample,), **kwargs).export(str(path))
    except Exception as exc:  # converter failures come as many types; all mean "does not convert"
        raise explain_failure(*source, exc, what) from exc


def _finish(tmp: Path, out_path: Path, precision: str, ref: np.ndarray, options: ExportOptions, start: float) -> ExportResult:
    parity = compare(run_tflite(tmp, options.eval_x, options.tflite_layout), ref, options.eval_y)
    check(parity, precision, out_path.name)
    audit = audit_tflite(tmp)
    os.replace(tmp, out_path)
    return ExportResult(out_path, "tflite", precision, parity, audit, time.perf_counter() - start, options.tflite_layout)


def export_tflite(model: nn.Module, sample: torch.Tensor, out_path: Path, options: ExportOptions) -> ExportResult:
    """fp32 TFLite."""
    start = time.perf_counter()
    model = fold_batchnorm(model)
    ref = reference_logits(model, options.eval_x)
    io_model, io_sample = _io_model(model, sample, options.tflite_layout)
    with temp_file(out_path) as tmp:
        _convert(io_model, io_sample, tmp, "TFLite", (model, sample))
        return _finish(tmp, out_path, "fp32", ref, options, start)


def export_tflite_fp16(model: nn.Module, sample: torch.Tensor, out_path: Path, options: ExportOptions) -> ExportResult:
    """TFLite with fp16 weights (dequantized to fp32 at load; compute stays fp32 on CPU)."""
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    start = time.perf_counter()
    model = fold_batchnorm(model)
    ref = reference_logits(model, options.eval_x)
    io_model, io_sample = _io_model(model, sample, options.tflite_layout)
    with temp_file(out_path.with_name(out_path.name + ".fp32.tflite")) as fp32, temp_file(out_path) as tmp:
        _convert(io_model, io_sample, fp32, "TFLite", (model, sample))
        q = quantizer.Quantizer(bytearray(fp32.read_bytes()))
        q.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                 granularity=qtyping.QuantGranularity.TENSORWISE,
                                 algorithm_key=AlgorithmName.FLOAT_CASTING)
        with quiet_converter():
            tmp.write_bytes(bytes(q.quantize(enable_progress_report=False).quantized_model))
        return _finish(tmp, out_path, "fp16", ref, options, start)


def export_tflite_int8(model: nn.Module, sample: torch.Tensor, out_path: Path, options: ExportOptions) -> ExportResult:
    """Full-integer int8 TFLite: int8 weights (per-channel), int8 activations, int8 input and output."""
    _litert()
    with quiet_converter():  # torchao announces each optional CUDA kernel it cannot load
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if options.calibration_x is None or not len(options.calibration_x):
        raise ExportError("int8 TFLite needs calibration samples (export.calibration_samples > 0)")
    start = time.perf_counter()
    model = fold_batchnorm(model)
    ref = reference_logits(model, options.eval_x)
    io_model, io_sample = _io_model(model, sample, options.tflite_layout)
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    try:
        with quiet_converter():
            prepared = prepare_pt2e(torch.export.export(io_model, (io_sample,)).module(), quantizer)
    except Exception as exc:  # export/prepare failures name an unsupported op
        raise explain_failure(model, sample, exc, "int8 TFLite") from exc
    calib = torch.from_numpy(options.calibration_x)
    if options.tflite_layout == "nhwc":
        calib = calib.permute(0, 2, 3, 1).contiguous()
    with torch.no_grad():
        for i in range(len(calib)):  # batch 1: the graph was exported for the single-sample shape
            prepared(calib[i:i + 1])
    with quiet_converter():
        quantized = move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=False))
    with temp_file(out_path) as tmp:
        _convert(quantized, io_sample, tmp, "int8 TFLite", (model, sample), quant_config=QuantConfig(pt2e_quantizer=quantizer))
        return _finish(tmp, out_path, "int8", ref, options, start)
