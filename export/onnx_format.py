"""The ONNX formats: fp32 (one self-contained file, dynamic batch axis) and static int8 (QDQ,
per-channel), run by onnxruntime. Their conversions, audit and I/O signature, then the `Format`
objects that declare them (rows of export.formats.FORMATS).

torch, onnx and onnxruntime are imported inside the functions.
"""
from __future__ import annotations

import logging
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
_WEIGHTED = {"Conv": ((1,), (2,)), "ConvTranspose": ((1,), (2,)), "Gemm": ((1,), (2,)), "MatMul": ((0, 1), ()),
             "Gather": ((0,), ())}
_MOVES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity"}
_CONVERSIONS = {"QuantizeLinear", "DequantizeLinear"}


def _write_fp32(model: nn.Module, sample: torch.Tensor, path: Path, opset: int) -> None:
    import torch

    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it; fail with a clear message)
    except ImportError:
        raise MissingDependency("the ONNX exporter needs onnxscript; pip install onnx onnxscript onnxruntime") from None
    # it warns once per torchvision op it cannot register; torchvision is optional for edgekd
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        with quiet_converter():
            torch.onnx.export(model, (sample,), str(path), dynamo=True, external_data=False, opset_version=opset,
                              dynamic_shapes=({0: batch},), input_names=["input"], output_names=["logits"],
                              verbose=False)
    except Exception as exc:  # the exporter raises a zoo of types; all mean "this model does not convert"
        raise explain_failure(model, sample, exc, "ONNX") from exc
    if Path(f"{path}.data").exists():
        raise ExportError(f"{path}: the exporter wrote weights to a separate .data file; edgekd needs one file")


def _finalize(path: Path, options: ExportOptions) -> None:
    """Embed the metadata and run the full ONNX checker."""
    import onnx

    model = onnx.load(str(path))
    for key, value in options.metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def convert_onnx(model: nn.Module, sample: torch.Tensor, path: Path, options: ExportOptions) -> None:
    """fp32 ONNX, checked with onnx.checker (full_check)."""
    _write_fp32(model, sample, path, options.opset)
    _finalize(path, options)


class _CalibrationReader:
    """Feeds calibration samples to onnxruntime's quantizer one batch at a time."""

    def __init__(self, x: np.ndarray, input_name: str, batch_size: int = 32):
        self._batches = iter([{input_name: x[i:i + batch_size]} for i in range(0, len(x), batch_size)])

    def get_next(self):
        return next(self._batches, None)


def _nodes_of(path: Path, layers: tuple[str, ...]) -> list[str]:
    """The ONNX nodes the torch exporter made from `layers` (module paths), by its name-scope metadata."""
    if not layers:
        return []
    import ast

    import onnx

    nodes = []
    for node in onnx.load(str(path)).graph.node:
        scopes = next((ast.literal_eval(p.value) for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), [])
        if ".".join(scopes[:-1]) in layers:  # the last scope is the op, the ones before it the module path
            nodes.append(node.name)
    return nodes


def convert_onnx_int8(model: nn.Module, sample: torch.Tensor, path: Path, options: ExportOptions) -> None:
    """Static int8 ONNX: QDQ format, per-channel int8 weights, int8 activations calibrated on train samples.

    With `onnx_reduce_range` (the default) weights use 7 bits (|w| <= 64): onnxruntime's x86 kernels
    on CPUs without VNNI multiply uint8 activations by int8 weights with VPMADDUBSW, which saturates
    a pair of products at 32767; 2 x 255 x 64 stays below it, 2 x 255 x 127 does not. Measured on
    the mnist5k teacher under an emulated Haswell CPU: 8-bit weights 97.50 %, 7-bit 98.10 % = fp32.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[options.onnx_calibration]
    with (atomic_path(path.with_name(path.name + ".fp32.onnx"), keep_suffix=True, commit=False) as fp32,
          atomic_path(path.with_name(path.name + ".prep.onnx"), keep_suffix=True, commit=False) as prepared):
        _write_fp32(model, sample, fp32, options.opset)
        with quiet_converter():
            quant_pre_process(str(fp32), str(prepared))  # shape inference + graph cleanup, as ORT recommends
            quantize_static(str(prepared), str(path), _CalibrationReader(options.calibration_x, "input"),
                            nodes_to_exclude=_nodes_of(prepared, options.float_layers),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8, calibrate_method=method, reduce_range=options.onnx_reduce_range,
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    _finalize(path, options)


def convert_onnx_int8_qat(net: nn.Module, model: nn.Module, sample: torch.Tensor, path: Path,
                          options: ExportOptions) -> None:
    """Static int8 ONNX of the quantization-aware trained weights and BatchNorm statistics. onnxruntime
    quantizes them on its own grid (7-bit weights with `onnx_reduce_range`), calibrated like PTQ: the
    8-bit grid the QAT model learned would saturate x86 kernels without VNNI."""
    from edgekd.export import qat

    convert_onnx_int8(qat.float_model(model, net), sample, path, options)


def audit_onnx(path: Path) -> dict:
    """What an .onnx file is, op by op (the terms of export.audit). In a QDQ graph an op computes in integer when each of its
    activation inputs comes out of a DequantizeLinear of an int8 tensor and each of its outputs goes
    only into QuantizeLinear to int8 (onnxruntime then runs the integer kernel)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    init = {t.name: t for t in graph.initializer}
    np_dtype = lambda t: helper.tensor_dtype_to_np_dtype(t).name  # noqa: E731
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def through_moves_down(name: str) -> list:
        """Consumers of `name`, looking through data-movement ops."""
        found = []
        for n in consumers.get(name, []):
            found += through_moves_down(n.output[0]) if n.op_type in _MOVES else [n]
        return found

    def through_moves_up(name: str):
        n = producer.get(name)
        return through_moves_up(n.input[0]) if n is not None and n.op_type in _MOVES else n

    def int_dq(name: str) -> bool:
        n = through_moves_up(name)
        return (n is not None and n.op_type == "DequantizeLinear" and n.input[0] not in init
                and len(n.input) > 2 and n.input[2] in init and np_dtype(init[n.input[2]].data_type) in INT_ACTIVATIONS)

    def constant(name: str):
        """The stored initializer behind `name` (directly or through DequantizeLinear), else None."""
        if name in init:
            return init[name]
        n = producer.get(name)
        return init.get(n.input[0]) if n is not None and n.op_type == "DequantizeLinear" else None

    weights, scale_counts, int_values, integer_ops, float_ops = set(), [], [], [], []
    graph_outputs = {o.name for o in graph.output}
    for n in graph.node:
        if n.op_type in _CONVERSIONS or n.op_type in _MOVES:
            continue
        slots, biases = _WEIGHTED.get(n.op_type, ((), ()))
        for slot in slots:
            w = constant(n.input[slot]) if slot < len(n.input) else None
            if w is not None:
                weights.add(np_dtype(w.data_type))
                if w.data_type == onnx.TensorProto.INT8:
                    int_values.append(numpy_helper.to_array(w))
                dq = producer.get(n.input[slot])
                if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[1] in init:
                    scale_counts.append(int(np.prod(init[dq.input[1]].dims)))
        activations = [i for k, i in enumerate(n.input) if i and k not in slots and k not in biases
                       and constant(i) is None]
        outs = [c for o in n.output for c in through_moves_down(o)]
        integer = (activations and all(int_dq(i) for i in activations) and outs
                   and all(c.op_type == "QuantizeLinear" for c in outs) and not graph_outputs & set(n.output))
        (integer_ops if integer else float_ops).append(n.op_type)
    elem = lambda v: np_dtype(v.type.tensor_type.elem_type)  # noqa: E731
    q_types = {np_dtype(init[n.input[2]].data_type) for n in graph.node
               if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in init}
    return {**summary(weights=weights, int_weights=int_values, scale_counts=scale_counts, integer_ops=integer_ops,
                      float_ops=float_ops, ops=[n.op_type for n in graph.node],
                      activation_dtypes=q_types if integer_ops else {"float32"}, input_dtype=elem(graph.input[0]),
                      output_dtype=elem(graph.output[0])),
            "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))}


def io_signature(path: Path) -> dict:
    """Input and output tensors as the file declares them: name, shape (a name for a dynamic axis), dtype."""
    import onnx
    from onnx import helper

    graph = onnx.load(str(path), load_external_data=False).graph

    def value(v) -> dict:
        dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        return {"name": v.name, "shape": dims, "dtype": helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                "quantization": None}
    return {"input": value(graph.input[0]), "output": value(graph.output[0])}


def _int8_calibration(options: ExportOptions) -> dict:
    return {"method": options.onnx_calibration, "reduce_range": options.onnx_reduce_range}


ONNX = Format(name="onnx", suffix=".onnx", runtime="onnx", precision="fp32", help="fp32 ONNX",
              convert=convert_onnx, audit=audit_onnx, io_signature=io_signature, options=("opset",))
ONNX_INT8 = Format(name="onnx_int8", suffix=".int8.onnx", runtime="onnx", precision="int8",
                   help="static int8 ONNX, QDQ, per-channel weights", convert=convert_onnx_int8, audit=audit_onnx,
                   io_signature=io_signature, options=("opset", "onnx_calibration", "onnx_reduce_range", "float_layers"),
                   calibration=_int8_calibration, convert_qat=convert_onnx_int8_qat, float_layers=True)
