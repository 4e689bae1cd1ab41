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

Each format family reads its own files (onnx_format.audit_onnx, tflite_format.audit_tflite) and
judges them with the helpers here, so every format's audit means the same.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

INT_ACTIVATIONS = ("int8", "uint8", "int16")
_LOW_PRECISION_WEIGHTS = ("int8", "uint8", "int4", "float16")


def classify(weight_dtypes: set[str], integer_ops: list[str], float_ops: list[str]) -> str:
    if integer_ops and not float_ops:
        return "full-integer"
    if integer_ops:
        return "mixed"
    if weight_dtypes & set(_LOW_PRECISION_WEIGHTS):
        return "weight-only"
    return "float"


def granularity(scale_counts: list[int]) -> str | None:
    return "per-channel" if any(s > 1 for s in scale_counts) else "per-tensor" if scale_counts else None


def weight_bits(values: list[np.ndarray]) -> int | None:
    """Bits the int8 weights really use: 7 when every |value| <= 64 (onnxruntime's reduce_range).
    Then a pair of uint8 x int8 products stays below 32767 (2 x 255 x 64 = 32640), so x86 int8
    kernels without VNNI (VPMADDUBSW) cannot saturate."""
    ints = [v for v in values if v.dtype == np.int8 and v.size]
    if not ints:
        return None
    return 7 if max(int(np.abs(v.astype(np.int16)).max()) for v in ints) <= 64 else 8


def summary(*, weights: set[str], int_weights: list[np.ndarray], scale_counts: list[int], integer_ops: list[str],
            float_ops: list[str], ops: list[str], activation_dtypes: set[str], input_dtype: str,
            output_dtype: str) -> dict:
    """The audit record every format gives, from what its reader found in the file.

    Args:
        weights: dtypes of the stored weights; int_weights: the int8 ones' values; scale_counts: the
            number of quantization scales of each quantized weight.
        integer_ops, float_ops: compute ops by where they run; ops: every op of the graph.
    """
    return {"kind": classify(weights, integer_ops, float_ops), "weight_dtypes": sorted(weights),
            "weight_bits": weight_bits(int_weights), "activation_dtypes": sorted(activation_dtypes),
            "input_dtype": input_dtype, "output_dtype": output_dtype, "granularity": granularity(scale_counts),
            "op_count": len(ops), "ops": dict(sorted(Counter(ops).items())), "float_ops": sorted(set(float_ops))}
