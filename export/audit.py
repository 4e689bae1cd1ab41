"""Read a written model file back and record what it really is, from the file, not from our intent.

The audit goes op by op. A weight is the constant in an op's weight slot (a convolution's filter,
a fully connected layer's matrix), read directly or through a DEQUANTIZE / DequantizeLinear; int32
biases, shapes, axes and paddings are parameters, never weights. An op computes in integer when its
activations are int8/int16. The file is then:

    full-integer   every compute op runs on int8/int16 activations (int32 biases allowed)
    weight-only    low-precision weights (int8, fp16) but every compute op runs in float
    mixed          some compute ops run in integer, the ones listed in `float_ops` in float
    float          float weights and float compute

Data-movement ops (reshape, transpose, squeeze) compute nothing and are not counted.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from edgekd.export.runtimes import tflite_interpreter

_INT_ACTIVATIONS = ("int8", "uint8", "int16")
_LOW_PRECISION_WEIGHTS = ("int8", "uint8", "int4", "float16")

# op -> (weight input slots, bias input slots)
_TFLITE_WEIGHTED = {"CONV_2D": ((1,), (2,)), "DEPTHWISE_CONV_2D": ((1,), (2,)), "FULLY_CONNECTED": ((1,), (2,)),
                    "TRANSPOSE_CONV": ((1,), (3,)), "CONV_3D": ((1,), (2,)), "BATCH_MATMUL": ((0, 1), ()),
                    "EMBEDDING_LOOKUP": ((1,), ())}
_TFLITE_MOVES = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE"}
_TFLITE_CONVERSIONS = {"QUANTIZE", "DEQUANTIZE"}
_ONNX_WEIGHTED = {"Conv": ((1,), (2,)), "ConvTranspose": ((1,), (2,)), "Gemm": ((1,), (2,)), "MatMul": ((0, 1), ()),
                  "Gather": ((0,), ())}
_ONNX_MOVES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity"}
_ONNX_CONVERSIONS = {"QuantizeLinear", "DequantizeLinear"}


def classify(weight_dtypes: set[str], integer_ops: list[str], float_ops: list[str]) -> str:
    if integer_ops and not float_ops:
        return "full-integer"
    if integer_ops:
        return "mixed"
    if weight_dtypes & set(_LOW_PRECISION_WEIGHTS):
        return "weight-only"
    return "float"


def _granularity(scale_counts: list[int]) -> str | None:
    return "per-channel" if any(s > 1 for s in scale_counts) else "per-tensor" if scale_counts else None


def _weight_bits(values: list[np.ndarray]) -> int | None:
    """Bits the int8 weights really use: 7 when every |value| <= 64 (onnxruntime's reduce_range).
    Then a pair of uint8 x int8 products stays below 32767 (2 x 255 x 64 = 32640), so x86 int8
    kernels without VNNI (VPMADDUBSW) cannot saturate."""
    ints = [v for v in values if v.dtype == np.int8 and v.size]
    if not ints:
        return None
    return 7 if max(int(np.abs(v.astype(np.int16)).max()) for v in ints) <= 64 else 8


def audit_tflite(path: Path) -> dict:
    """What a .tflite file is, op by op: weights, activations, float ops, granularity, I/O dtypes."""
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
        if name in _TFLITE_CONVERSIONS or name in _TFLITE_MOVES:
            continue
        slots, _ = _TFLITE_WEIGHTED.get(name, ((), ()))
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
        (integer_ops if outputs and all(d in _INT_ACTIVATIONS for d in outputs) else float_ops).append(name)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    return {"kind": classify(weights, integer_ops, float_ops), "weight_dtypes": sorted(weights),
            "weight_bits": _weight_bits(int_values),
            "activation_dtypes": sorted({dtype(i) for op in ops if op["op_name"] not in _TFLITE_CONVERSIONS
                                         for i in op["outputs"] if i >= 0}),
            "input_dtype": inp["dtype"].__name__, "output_dtype": out["dtype"].__name__,
            "granularity": _granularity(scale_counts), "op_count": len(ops),
            "ops": dict(sorted(Counter(op["op_name"] for op in ops).items())), "float_ops": sorted(set(float_ops))}


def audit_onnx(path: Path) -> dict:
    """The same facts for an ONNX file. In a QDQ graph an op computes in integer when each of its
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
            found += through_moves_down(n.output[0]) if n.op_type in _ONNX_MOVES else [n]
        return found

    def through_moves_up(name: str):
        n = producer.get(name)
        return through_moves_up(n.input[0]) if n is not None and n.op_type in _ONNX_MOVES else n

    def int_dq(name: str) -> bool:
        n = through_moves_up(name)
        return (n is not None and n.op_type == "DequantizeLinear" and n.input[0] not in init
                and len(n.input) > 2 and n.input[2] in init and np_dtype(init[n.input[2]].data_type) in _INT_ACTIVATIONS)

    def constant(name: str):
        """The stored initializer behind `name` (directly or through DequantizeLinear), else None."""
        if name in init:
            return init[name]
        n = producer.get(name)
        return init.get(n.input[0]) if n is not None and n.op_type == "DequantizeLinear" else None

    weights, scale_counts, int_values, integer_ops, float_ops = set(), [], [], [], []
    graph_outputs = {o.name for o in graph.output}
    for n in graph.node:
        if n.op_type in _ONNX_CONVERSIONS or n.op_type in _ONNX_MOVES:
            continue
        slots, biases = _ONNX_WEIGHTED.get(n.op_type, ((), ()))
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
    return {"kind": classify(weights, integer_ops, float_ops), "weight_dtypes": sorted(weights),
            "weight_bits": _weight_bits(int_values),
            "activation_dtypes": sorted(q_types if integer_ops else {"float32"}),
            "input_dtype": elem(graph.input[0]), "output_dtype": elem(graph.output[0]),
            "granularity": _granularity(scale_counts), "op_count": len(graph.node),
            "ops": dict(sorted(Counter(n.op_type for n in graph.node).items())), "float_ops": sorted(set(float_ops)),
            "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))}


def io_signature(path: Path) -> dict:
    """Input and output tensors as the file declares them: name, shape, dtype, (scale, zero point)."""
    from edgekd.export.formats import FORMATS, format_of

    if FORMATS[format_of(path)].family == "tflite":
        interp = tflite_interpreter(path)

        def tensor(d: dict) -> dict:
            scale, zero = d["quantization"]
            return {"name": d["name"], "shape": [int(v) for v in d["shape"]], "dtype": d["dtype"].__name__,
                    "quantization": {"scale": float(scale), "zero_point": int(zero)} if scale else None}
        return {"input": tensor(interp.get_input_details()[0]), "output": tensor(interp.get_output_details()[0])}
    import onnx
    from onnx import helper

    graph = onnx.load(str(path), load_external_data=False).graph

    def value(v) -> dict:
        dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        return {"name": v.name, "shape": dims, "dtype": helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                "quantization": None}
    return {"input": value(graph.input[0]), "output": value(graph.output[0])}
