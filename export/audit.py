"""Read a written model file back and record what it really is, from the file, not from our intent.

Users of popular exporters get files named "int8" that are weight-only; the audit says exactly
which tensors are integer, per-channel or per-tensor, and which ops still compute in float.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from export.runtimes import tflite_interpreter

_INT = ("int8", "uint8", "int16", "int32")


def _kind(weight_dtypes: set[str], activation_dtypes: set[str]) -> str:
    weights_int = bool(weight_dtypes) and weight_dtypes <= set(_INT)
    acts_int = bool(activation_dtypes) and activation_dtypes <= set(_INT)
    if weights_int and acts_int:
        return "full-integer"
    if any(d in _INT for d in weight_dtypes) or "float16" in weight_dtypes:
        return "weight-only"
    return "float"


def audit_tflite(path: Path) -> dict:
    """Tensor dtypes of weights and activations, quantization granularity, I/O dtypes, op counts."""
    interp = tflite_interpreter(path)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # the public API has no op list; this is what LiteRT's own tools use
    produced = {i for op in ops for i in op["outputs"]}
    graph_inputs = {d["index"] for d in interp.get_input_details()}
    const = {i for op in ops for i in op["inputs"] if i >= 0 and i not in produced and i not in graph_inputs}
    compute = [op for op in ops if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE")]
    # weights: constant tensors of rank >= 2 (rank-1 constants are biases and shapes), read directly or through DEQUANTIZE
    weights = {tensors[i]["dtype"].__name__ for op in ops for i in op["inputs"]
               if i in const and len(tensors[i]["shape"]) >= 2}
    activations = {tensors[i]["dtype"].__name__ for op in compute for i in op["outputs"]}
    float_ops = sorted({op["op_name"] for op in compute
                        if any(tensors[i]["dtype"] == np.float32 for i in op["outputs"])})
    scales = [len(tensors[i]["quantization_parameters"]["scales"]) for i in const
              if len(tensors[i]["quantization_parameters"]["scales"])]
    io = {"input_dtype": interp.get_input_details()[0]["dtype"].__name__,
          "output_dtype": interp.get_output_details()[0]["dtype"].__name__}
    return {"kind": _kind(weights, activations), "weight_dtypes": sorted(weights),
            "activation_dtypes": sorted(activations), **io,
            "granularity": "per-channel" if any(s > 1 for s in scales) else "per-tensor" if scales else None,
            "op_count": len(ops), "ops": dict(sorted(Counter(op["op_name"] for op in ops).items())),
            "non_int8_ops": float_ops}


def audit_onnx(path: Path) -> dict:
    """The same facts for an ONNX file: initializer dtypes, QDQ structure, I/O dtypes, op counts."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    graph = model.graph
    init = {t.name: t for t in graph.initializer}
    dtype = lambda t: helper.tensor_dtype_to_np_dtype(t).name  # noqa: E731
    q_nodes = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    dq_nodes = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    compute = [n for n in graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")]
    # weights: initializers of rank >= 2 (rank-1 ones are biases and shapes), read directly or through DequantizeLinear
    weights = {dtype(init[i].data_type) for n in graph.node for i in n.input[:1 if n.op_type == "DequantizeLinear" else None]
               if i in init and len(init[i].dims) > 1}
    # activations are quantized when QuantizeLinear nodes act on computed (non-initializer) tensors
    acts = {dtype(init[n.input[2]].data_type) for n in q_nodes if len(n.input) > 2 and n.input[2] in init
            and n.input[0] not in init}
    if not acts:
        acts = {"float32"}
    scales = [int(np.prod(init[n.input[1]].dims)) for n in dq_nodes if n.input[0] in init and n.input[1] in init]
    elem = lambda v: dtype(v.type.tensor_type.elem_type)  # noqa: E731
    return {"kind": _kind(weights, acts), "weight_dtypes": sorted(weights), "activation_dtypes": sorted(acts),
            "input_dtype": elem(graph.input[0]), "output_dtype": elem(graph.output[0]),
            "granularity": "per-channel" if any(s > 1 for s in scales) else "per-tensor" if scales else None,
            "op_count": len(graph.node), "ops": dict(sorted(Counter(n.op_type for n in graph.node).items())),
            "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))}


def io_signature(path: Path) -> dict:
    """Input and output tensors as the file declares them: name, shape, dtype, (scale, zero point)."""
    if path.suffix == ".tflite":
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
