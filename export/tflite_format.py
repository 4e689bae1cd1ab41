"""The TFLite formats, converted by litert-torch and run by LiteRT: fp32, fp16 weights, and
full-integer int8 (PT2E static, per-channel). Their conversions, audit and I/O signature, then the
`Format` objects that declare them (rows of export.formats.FORMATS).

`tflite_layout = "nhwc"` (the mobile convention, default) wraps the model so the file takes
(1, H, W, C) inputs; "nchw" keeps PyTorch's layout. torch and the converters are imported inside
the functions.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekd.errors import ExportError, MissingDependency
from edgekd.export.audit import INT_ACTIVATIONS, summary
from edgekd.export.common import explain_failure, quiet_converter
from edgekd.export.spec import ExportOptions, Format
from edgekd.fileio import atomic_path

if TYPE_CHECKING:
    import torch
    from torch import nn

# op -> (weight input slots, bias input slots)
_WEIGHTED = {"CONV_2D": ((1,), (2,)), "DEPTHWISE_CONV_2D": ((1,), (2,)), "FULLY_CONNECTED": ((1,), (2,)),
             "TRANSPOSE_CONV": ((1,), (3,)), "CONV_3D": ((1,), (2,)), "BATCH_MATMUL": ((0, 1), ()),
             "EMBEDDING_LOOKUP": ((1,), ())}
_MOVES = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE"}
_CONVERSIONS = {"QUANTIZE", "DEQUANTIZE"}


def _litert():
    try:
        with quiet_converter():
            import litert_torch
    except ImportError:
        raise MissingDependency("TFLite export needs litert-torch; pip install litert-torch") from None
    return litert_torch


def io_model(model: nn.Module, sample: torch.Tensor, layout: str) -> tuple[nn.Module, torch.Tensor]:
    """The model and sample as the file will see them (channels last for nhwc)."""
    if layout == "nchw":
        return model, sample
    return _litert().to_channel_last_io(model, args=[0]).eval(), sample.permute(0, 2, 3, 1).contiguous()


def write_tflite(model: nn.Module, sample: torch.Tensor, path: Path, what: str,
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
    write_tflite(*io_model(model, sample, options.tflite_layout), path, "TFLite", (model, sample))


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


def _weighted_ops(path: Path) -> list[tuple[str, int]]:
    """(output tensor name, weight element count) of each weighted op of a .tflite file, in execution order."""
    from edgekd.export.runtimes import tflite_interpreter

    interp = tflite_interpreter(path)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    return [(tensors[op["outputs"][0]]["name"], int(np.prod(tensors[op["inputs"][1]]["shape"])))
            for op in interp._get_ops_details() if op["op_name"] in _WEIGHTED and op["op_name"] != "BATCH_MATMUL"]


def _layer_tensors(model: nn.Module, path: Path) -> dict[str, str]:
    """Module path of each weighted layer -> the output tensor name of its op in the fp32 file `path`.

    The converter's tensor names drop the module hierarchy (two blocks' "Conv2d_0" look alike), so
    layers are paired with ops in order and the pairing is checked by each weight's element count.
    """
    from edgekd.export.common import weighted_layers

    layers = weighted_layers(model)
    modules = dict(model.named_modules())
    ops = _weighted_ops(path)
    counts = [modules[name].weight.numel() for name in layers]
    if len(ops) != len(layers) or [n for _, n in ops] != counts:
        raise ExportError(f"cannot keep layers of this model in float in int8 TFLite: its {len(layers)} weighted "
                          f"layers do not pair with the file's {len(ops)} weighted ops in order; set "
                          "export.int8_fallback = false")
    return {name: tensor for name, (tensor, _) in zip(layers, ops)}


def _convert_keeping_float(model: nn.Module, sample: torch.Tensor, path: Path, options: ExportOptions) -> None:
    """int8 TFLite whose `options.float_layers` compute in float (int8 weights dequantized), the rest int8,
    int8 input and output: ai-edge-quantizer's static int8 on the fp32 file. LiteRT's converter cannot do
    this from PT2E: a layer left unannotated between int8 tensors comes out int8 all the same."""
    import contextlib
    import io
    import re

    from ai_edge_quantizer import qtyping, quantizer

    from edgekd.export.runtimes import tflite_interpreter

    ops = qtyping.TFLOperationName.ALL_SUPPORTED
    with atomic_path(path.with_name(path.name + ".fp32.tflite"), keep_suffix=True, commit=False) as fp32:
        convert_tflite(model, sample, fp32, options)
        tensors = _layer_tensors(model, fp32)
        signature = tflite_interpreter(fp32).get_signature_list()
        q = quantizer.Quantizer(bytearray(fp32.read_bytes()))
    q.add_static_config(regex=".*", operation_name=ops, activation_num_bits=8, weight_num_bits=8)
    for layer in options.float_layers:
        # the quantizer matches an op's "scope": its output tensor names, each followed by ";"
        q.add_weight_only_config(regex=f"^{re.escape(tensors[layer])};$", operation_name=ops, num_bits=8)
    (name, sig), = signature.items()
    calib = options.calibration_x.transpose(0, 2, 3, 1) if options.tflite_layout == "nhwc" else options.calibration_x
    with quiet_converter(), contextlib.redirect_stderr(io.StringIO()):  # its progress bar
        result = q.calibrate({name: [{sig["inputs"][0]: calib[i:i + 1]} for i in range(len(calib))]}, num_threads=1)
        path.write_bytes(bytes(q.quantize(result).quantized_model))


def convert_tflite_int8(model: nn.Module, sample: torch.Tensor, path: Path, options: ExportOptions) -> None:
    """Full-integer int8 TFLite: int8 weights (per-channel), int8 activations, int8 input and output (PT2E).
    With `options.float_layers`, those layers compute in float (`_convert_keeping_float`)."""
    import torch

    if options.float_layers:
        return _convert_keeping_float(model, sample, path, options)

    _litert()
    with quiet_converter():  # torchao announces each optional CUDA kernel it cannot load
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    net, io_sample = io_model(model, sample, options.tflite_layout)
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    try:
        with quiet_converter():
            prepared = prepare_pt2e(torch.export.export(net, (io_sample,)).module(), quantizer)
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
    write_tflite(quantized, io_sample, path, "int8 TFLite", (model, sample), quant_config=QuantConfig(pt2e_quantizer=quantizer))


def convert_tflite_int8_qat(net: nn.Module, model: nn.Module, sample: torch.Tensor, path: Path,
                            options: ExportOptions) -> None:
    """Full-integer int8 TFLite from a quantization-aware trained model (its own learned ranges)."""
    from edgekd.export import qat

    qat.convert_tflite(net, sample, path, options)


def audit_tflite(path: Path) -> dict:
    """What a .tflite file is, op by op: weights, activations, float ops, granularity, I/O dtypes."""
    from edgekd.export.runtimes import tflite_interpreter

    interp = tflite_interpreter(path)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # the public API has no op list; this is what LiteRT's own tools use
    dtype = lambda i: tensors[i]["dtype"].__name__  # noqa: E731
    producer = {i: op for op in ops for i in op["outputs"]}

    def source(i: int) -> int:
        """A weight read through DEQUANTIZE (fp16 or int8 storage) counts with its stored dtype."""
        op = producer.get(i)
        return op["inputs"][0] if op is not None and op["op_name"] == "DEQUANTIZE" else i

    weights, scale_counts, int_values = set(), [], []
    integer_ops, float_ops = [], []
    for op in ops:
        name = op["op_name"]
        if name in _CONVERSIONS or name in _MOVES:
            continue
        slots, _ = _WEIGHTED.get(name, ((), ()))
        for slot in slots:
            if slot < len(op["inputs"]) and op["inputs"][slot] >= 0:
                w = source(op["inputs"][slot])
                if w in producer:  # computed, not constant: an activation operand (e.g. BATCH_MATMUL of two inputs)
                    continue
                weights.add(dtype(w))
                scales = tensors[w]["quantization_parameters"]["scales"]
                if len(scales):
                    scale_counts.append(len(scales))
                if tensors[w]["dtype"] == np.int8:
                    int_values.append(interp.get_tensor(w))
        outputs = [dtype(i) for i in op["outputs"] if i >= 0]
        (integer_ops if outputs and all(d in INT_ACTIVATIONS for d in outputs) else float_ops).append(name)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    return summary(weights=weights, int_weights=int_values, scale_counts=scale_counts, integer_ops=integer_ops,
                   float_ops=float_ops, ops=[op["op_name"] for op in ops],
                   activation_dtypes={dtype(i) for op in ops if op["op_name"] not in _CONVERSIONS
                                      for i in op["outputs"] if i >= 0},
                   input_dtype=inp["dtype"].__name__, output_dtype=out["dtype"].__name__)


def io_signature(path: Path) -> dict:
    """Input and output tensors as the file declares them: name, shape, dtype, (scale, zero point)."""
    from edgekd.export.runtimes import tflite_interpreter

    interp = tflite_interpreter(path)

    def tensor(d: dict) -> dict:
        scale, zero = d["quantization"]
        return {"name": d["name"], "shape": [int(v) for v in d["shape"]], "dtype": d["dtype"].__name__,
                "quantization": {"scale": float(scale), "zero_point": int(zero)} if scale else None}
    return {"input": tensor(interp.get_input_details()[0]), "output": tensor(interp.get_output_details()[0])}


TFLITE = Format(name="tflite", suffix=".tflite", runtime="tflite", precision="fp32", help="fp32 TFLite",
                convert=convert_tflite, audit=audit_tflite, io_signature=io_signature, options=("tflite_layout",),
                layout_option="tflite_layout")
TFLITE_FP16 = Format(name="tflite_fp16", suffix=".fp16.tflite", runtime="tflite", precision="fp16",
                     help="TFLite with fp16 weights", convert=convert_tflite_fp16, audit=audit_tflite,
                     io_signature=io_signature, options=("tflite_layout",), layout_option="tflite_layout")
TFLITE_INT8 = Format(name="tflite_int8", suffix=".int8.tflite", runtime="tflite", precision="int8",
                     help="full-integer int8 TFLite, int8 input and output", convert=convert_tflite_int8,
                     audit=audit_tflite, io_signature=io_signature, options=("tflite_layout", "float_layers"),
                     layout_option="tflite_layout",
                     # litert-torch's PT2E observers, not configurable: a histogram for activations, min/max for weights
                     calibration=lambda options: {"method": "histogram", "weights": "minmax"},
                     convert_qat=convert_tflite_int8_qat, float_layers=True)
