"""TFLite conversions via litert-torch: fp32, fp16 weights, and full-integer int8 (PT2E static, per-channel).

`tflite_layout = "nhwc"` (the mobile convention, default) wraps the model so the file takes
(1, H, W, C) inputs; "nchw" keeps PyTorch's layout.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgekd.errors import ExportError, MissingDependency
from edgekd.export.common import explain_failure, quiet_converter
from edgekd.export.formats import ExportOptions
from edgekd.fileio import atomic_path


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


def convert_tflite(model: nn.Module, sample: torch.Tensor, path: Path, options: ExportOptions) -> None:
    """fp32 TFLite."""
    _convert(*_io_model(model, sample, options.tflite_layout), path, "TFLite", (model, sample))


def convert_tflite_fp16(model: nn.Module, sample: torch.Tensor, path: Path, options: ExportOptions) -> None:
    """TFLite with fp16 weights (dequantized to fp32 at load; compute stays fp32 on CPU)."""
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    with atomic_path(path.with_name(path.name + ".fp32.tflite"), keep_suffix=True, commit=False) as fp32:
        convert_tflite(model, sample, fp32, options)
        q = quantizer.Quantizer(bytearray(fp32.read_bytes()))
    q.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                             granularity=qtyping.QuantGranularity.TENSORWISE, algorithm_key=AlgorithmName.FLOAT_CASTING)
    with quiet_converter():
        path.write_bytes(bytes(q.quantize(enable_progress_report=False).quantized_model))


def convert_tflite_int8(model: nn.Module, sample: torch.Tensor, path: Path, options: ExportOptions) -> None:
    """Full-integer int8 TFLite: int8 weights (per-channel), int8 activations, int8 input and output."""
    _litert()
    with quiet_converter():  # torchao announces each optional CUDA kernel it cannot load
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if options.calibration_x is None or not len(options.calibration_x):
        raise ExportError("int8 TFLite needs calibration samples (export.calibration_samples > 0)")
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
    _convert(quantized, io_sample, path, "int8 TFLite", (model, sample), quant_config=QuantConfig(pt2e_quantizer=quantizer))
