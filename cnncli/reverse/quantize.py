"""QuantizeLinear and DequantizeLinear: their scale in reverse, straight-through for the rounding
(the clipped straight-through estimator), so a QDQ pair passes R·scale·(1/scale) inside its range.

    DequantizeLinear   y = (q − zero_point)·scale              →  dq = R·scale
    QuantizeLinear     q = clip(round(x / scale) + zp)         →  dx = R / scale where x is inside
                                                                   the range, 0 where it clips

The scale is per tensor, or per axis (a 1-D scale along ``axis``); blocked scales (opset 21
``block_size``) are refused.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from cnncli.reverse.builder import Builder, carries_signal, shape_of, unsupported
from cnncli.reverse.rules import register


def _scale(b: Builder, node, a) -> str:
    if int(a.get("block_size", 0)):
        raise unsupported(node, "with blocked scales (block_size) is not supported")
    if carries_signal(b, node.input[1]):
        raise unsupported(node, "with a scale computed from the input is not supported")
    xs, ss = shape_of(b, node.input[0]), shape_of(b, node.input[1])
    scale = b.op("Cast", [b.fwd(node.input[1])], "scale", to=1)  # float16/bfloat16 scales as float32
    if len(ss) == 0 or (len(ss) == 1 and ss[0] == 1):
        return scale
    axis = int(a.get("axis", 1)) % len(xs)
    return b.op("Reshape", [scale, b.ints([1] * axis + [-1] + [1] * (len(xs) - axis - 1))], "scale_axis")


@register("DequantizeLinear")
def _dequantize(b: Builder, node, a, grads) -> dict:
    return {node.input[0]: b.op("Mul", [grads[0], _scale(b, node, a)], "dq_T")}


_RANGES = {TensorProto.INT8: (-128, 127), TensorProto.UINT8: (0, 255), TensorProto.INT16: (-32768, 32767),
           TensorProto.UINT16: (0, 65535), TensorProto.INT4: (-8, 7), TensorProto.UINT4: (0, 15)}


@register("QuantizeLinear", values=(1, 2))
def _quantize(b: Builder, node, a, grads) -> dict:
    """R / scale where x lies inside the integer range, 0 where it clips (the clipped
    straight-through estimator). onnxruntime's quantizer folds a ReLU into the zero point
    (zero point = the type's minimum clips at 0): that clip is a rectifier, treated as a ReLU."""
    x = node.input[0]
    g = b.op("Div", [grads[0], _scale(b, node, a)], "q_T")
    bounds = _RANGES.get(b.graph.types.get(node.output[0], TensorProto.UINT8))
    if bounds is None:  # float8 codes: no integer range to clip to
        return {x: g}
    scale, zp = b.value(node.input[1]), b.value(node.input[2]) if len(node.input) > 2 else None
    if scale is None:
        raise unsupported(node, "with a scale that could not be computed is not supported")
    scale = scale.astype(np.float64)
    zp = np.zeros_like(scale) if zp is None else zp.astype(np.float64)
    xs = shape_of(b, x)
    shape = [1] * len(xs)
    if scale.size > 1:
        shape[int(a.get("axis", 1)) % len(xs)] = -1
    lo, hi = ((q - zp) * scale for q in bounds)
    xf = b.fwd(x)
    above = b.float_mask(b.op("Greater", [xf, b.const(lo.reshape(shape))], "above"))
    inside = b.op("Mul", [above, b.float_mask(b.op("Less", [xf, b.const(hi.reshape(shape))], "below"))], "inside")
    if b.mode == "backprop" or np.any(zp != bounds[0]):
        return {x: b.op("Mul", [g, inside], "q_clip")}
    rectified = b.op("Relu", [g], "rectify")  # the clip at 0 is a ReLU: deconvnet and guided rectify
    return {x: rectified if b.mode == "deconvnet" else b.op("Mul", [rectified, inside], "q_clip")}
