"""The ExecuTorch formats, lowered to the XNNPACK delegate and run by ExecuTorch's runtime: fp32, and
static int8 (PT2E with XNNPACK's quantizer: per-channel symmetric weights, int8 activations). Their
conversions, audit and I/O signature, then the `Format` objects that declare them (rows of
export.formats.FORMATS).

A .pte file is a program: ops the delegate took run inside it as one compiled XNNPACK graph (its
own flatbuffer in the file), ops it refused run on ExecuTorch's portable kernels. The audit reads
both from the file. torch and executorch are imported inside the functions.
"""
from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from edgekd.errors import ExportError, MissingDependency
from edgekd.export.audit import summary
from edgekd.export.common import explain_failure, quiet_converter
from edgekd.export.spec import ExportOptions, Format

if TYPE_CHECKING:
    import torch
    from torch import nn

_PIP = "pip install executorch"
# XNNPACK's value types (backends/xnnpack/serialization/schema.fbs, XNNDatatype) by the dtype they store
_XNN_DTYPES = {"xnn_datatype_fp32": "float32", "xnn_datatype_fp16": "float16", "xnn_datatype_bf16": "bfloat16",
               "xnn_datatype_qint8": "int8", "xnn_datatype_qcint8": "int8", "xnn_datatype_quint8": "uint8",
               "xnn_datatype_qdint8": "int8", "xnn_datatype_qint32": "int32", "xnn_datatype_qcint32": "int32",
               "xnn_datatype_int32": "int32", "xnn_datatype_qcint4": "int4", "xnn_datatype_qbint4": "int4"}
_PER_CHANNEL = {"xnn_datatype_qcint8", "xnn_datatype_qcint32", "xnn_datatype_qcint4"}
_XNN_WEIGHTED = {"XNNConv2d", "XNNDepthwiseConv2d", "XNNFullyConnected", "XNNConvTranspose2d"}
_XNN_MOVES = {"XNNStaticTranspose", "XNNStaticReshape", "XNNCopy"}
_XNN_CONVERSIONS = {"XNNConvert"}  # fp32 <-> int8 at the graph's edges


def _lower(exported, path: Path, model: nn.Module, sample: torch.Tensor, what: str) -> None:
    try:
        with quiet_converter():
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower
    except ImportError:
        raise MissingDependency(f"{what} export needs ExecuTorch; {_PIP}") from None
    try:
        with quiet_converter():
            program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
    except Exception as exc:  # lowering failures come as many types; all mean "does not convert"
        raise explain_failure(model, sample, exc, what) from exc
    path.write_bytes(program.buffer)


def _export(model: nn.Module, sample: torch.Tensor, what: str):
    import torch

    try:
        with quiet_converter():
            return torch.export.export(model, (sample,))
    except Exception as exc:
        raise explain_failure(model, sample, exc, what) from exc


def convert_pte(model: nn.Module, sample: torch.Tensor, path: Path, options: ExportOptions) -> None:
    """fp32 ExecuTorch program, lowered to XNNPACK (the batch-1 shape of `sample`)."""
    _lower(_export(model, sample, "ExecuTorch"), path, model, sample, "ExecuTorch")


def _quantizer():
    try:
        with quiet_converter():
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                XNNPACKQuantizer, get_symmetric_quantization_config)
    except ImportError:
        raise MissingDependency(f"int8 ExecuTorch export needs ExecuTorch; {_PIP}") from None
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


def convert_pte_int8(model: nn.Module, sample: torch.Tensor, path: Path, options: ExportOptions) -> None:
    """Static int8 ExecuTorch program: PT2E with XNNPACK's quantizer, calibrated on the train split."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = _quantizer()
    exported = _export(model, sample, "int8 ExecuTorch")
    try:
        with quiet_converter():
            prepared = prepare_pt2e(exported.module(), quantizer)
    except Exception as exc:  # the quantizer's annotators name an op they cannot handle
        raise explain_failure(model, sample, exc, "int8 ExecuTorch") from exc
    calib = torch.from_numpy(options.calibration_x)
    with torch.no_grad():
        for i in range(len(calib)):  # batch 1: the graph is specialised to the export shape
            prepared(calib[i:i + 1])
    with quiet_converter():
        quantized = convert_pt2e(prepared)
    _lower(_export(quantized, sample, "int8 ExecuTorch"), path, model, sample, "int8 ExecuTorch")


def convert_pte_int8_qat(net: nn.Module, model: nn.Module, sample: torch.Tensor, path: Path,
                         options: ExportOptions) -> None:
    """Static int8 ExecuTorch program of the quantization-aware trained weights and BatchNorm statistics,
    calibrated like PTQ by XNNPACK's quantizer (the QAT graph carries litert-torch's annotations, which
    XNNPACK's partitioner is not written for)."""
    from edgekd.export import qat

    convert_pte_int8(qat.float_model(model, net), sample, path, options)


def _program(path: Path):
    """The deserialized program of a .pte file; ExportError when it is not one."""
    try:
        from executorch.exir._serialize._program import deserialize_pte_binary
    except ImportError:
        raise MissingDependency(f"reading .pte files needs ExecuTorch; {_PIP}") from None
    try:
        found = deserialize_pte_binary(path.read_bytes())
    except Exception as exc:  # a truncated or foreign file fails in the flatbuffer reader
        raise ExportError(f"{path}: not a readable ExecuTorch program ({type(exc).__name__}: {exc}); "
                          "re-export it (edgekd run CONFIG --force export)") from None
    return getattr(found, "program", found)


def _xnnpack_graph(payload: bytes) -> dict:
    """An XNNPACK delegate's graph as JSON, read with the flatc and schema that ExecuTorch ships."""
    import importlib.resources

    from executorch.exir._serialize._flatbuffer import _get_flatc_path

    start, size = int.from_bytes(payload[10:14], "little"), int.from_bytes(payload[14:18], "little")
    if payload[4:8] != b"XH00":  # no header: the payload is the flatbuffer itself
        start, size = 0, len(payload)
    schema = importlib.resources.files("executorch.backends.xnnpack.serialization") / "schema.fbs"
    with tempfile.TemporaryDirectory() as tmp, importlib.resources.as_file(schema) as fbs:
        graph = Path(tmp, "graph.bin")
        graph.write_bytes(payload[start:start + size])
        subprocess.run([_get_flatc_path(), "--json", "--strict-json", "--defaults-json", "--raw-binary", "-o", tmp,
                        str(fbs), "--", str(graph)], check=True, capture_output=True)
        # flatc writes clamp bounds as bare inf / nan, which JSON lacks
        text = re.sub(r"(?<=[:\[,\s])(-?)(inf|nan)(?=[,\s\]}])",
                      lambda m: m[1] + ("Infinity" if m[2] == "inf" else "NaN"), Path(tmp, "graph.json").read_text())
        return json.loads(text)


def _values(graph: dict) -> dict[int, dict]:
    """XNNPACK value id -> {"datatype", "dims"} (quantized values unwrapped)."""
    found = {}
    for value in graph.get("xvalues", []):
        v = value["xvalue_union"]
        tensor = v.get("tensor_value", v)
        found[tensor["id_out"]] = {"datatype": tensor["datatype"], "dims": tensor.get("dims", [])}
    return found


def audit_pte(path: Path) -> dict:
    """What a .pte file is, op by op (the terms of export.audit): XNNPACK's nodes by the datatype of
    their output, plus every op left outside the delegate (portable kernels, float)."""
    program = _program(path)
    plan = program.execution_plan[0]
    weights, scale_counts, integer_ops, float_ops, ops, activations = set(), [], [], [], [], set()
    for delegate in plan.delegates:
        if delegate.id != "XnnpackBackend":
            ops.append(delegate.id)
            continue
        graph = _xnnpack_graph(program.backend_delegate_data[delegate.processed.index].data)
        values = _values(graph)
        for node in graph.get("xnodes", []):
            kind = node["xnode_union_type"]
            ops.append(kind)
            if kind in _XNN_MOVES or kind in _XNN_CONVERSIONS:
                continue
            fields = node["xnode_union"]
            if kind in _XNN_WEIGHTED:
                w = values[fields["filter_id"]]
                weights.add(_XNN_DTYPES.get(w["datatype"], w["datatype"]))
                if w["datatype"].startswith("xnn_datatype_q"):
                    scale_counts.append(w["dims"][0] if w["datatype"] in _PER_CHANNEL else 1)
            out = _XNN_DTYPES.get(values[fields.get("output_id", fields.get("output1_id"))]["datatype"], "?")
            activations.add(out)
            (integer_ops if out in ("int8", "uint8") else float_ops).append(kind)
    portable = [op.name for op in plan.operators]
    record = summary(weights=weights, int_weights=[], scale_counts=scale_counts, integer_ops=integer_ops,
                     float_ops=float_ops + portable, ops=ops + portable, activation_dtypes=activations,
                     input_dtype=_dtype(plan, plan.inputs[0]), output_dtype=_dtype(plan, plan.outputs[0]))
    return {**record, "delegated_ops": len(ops), "not_delegated": sorted(set(portable))}


def _dtype(plan, index: int) -> str:
    """The dtype of a program value (ExecuTorch's ScalarType numbering, that of c10)."""
    scalar = int(plan.values[index].val.scalar_type)
    return {0: "uint8", 1: "int8", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 7: "float64",
            11: "bool"}.get(scalar, str(scalar))


def io_signature(path: Path) -> dict:
    """Input and output tensors as the program declares them: shape and dtype (the graph quantizes
    inside; a .pte file takes and gives float32)."""
    plan = _program(path).execution_plan[0]

    def tensor(index: int, name: str) -> dict:
        return {"name": name, "shape": [int(s) for s in plan.values[index].val.sizes], "dtype": _dtype(plan, index),
                "quantization": None}
    return {"input": tensor(plan.inputs[0], "input"), "output": tensor(plan.outputs[0], "output")}


PTE = Format(name="pte", suffix=".pte", runtime="pte", precision="fp32", help="fp32 ExecuTorch, XNNPACK delegate",
             convert=convert_pte, audit=audit_pte, io_signature=io_signature)
PTE_INT8 = Format(name="pte_int8", suffix=".int8.pte", runtime="pte", precision="int8",
                  help="static int8 ExecuTorch, per-channel weights, XNNPACK delegate", convert=convert_pte_int8,
                  audit=audit_pte, io_signature=io_signature,
                  # XNNPACKQuantizer's static observers: a histogram for activations, min/max for weights
                  calibration=lambda options: {"method": "histogram", "weights": "minmax"},
                  convert_qat=convert_pte_int8_qat)
