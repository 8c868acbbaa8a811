"""QuantizeLinear and DequantizeLinear: their scale in reverse, straight-through for the rounding
and the clipping (the usual straight-through estimator), so a QDQ pair passes R·scale·(1/scale).

    DequantizeLinear   y = (q − zero_point)·scale    →  dq = R·scale
    QuantizeLinear     q = round(x / scale) + zp     →  dx = R / scale

The scale is per tensor, or per axis (a 1-D scale along ``axis``); blocked scales (opset 21
``block_size``) are refused.
"""

from __future__ import annotations

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


@register("QuantizeLinear")
def _quantize(b: Builder, node, a, grads) -> dict:
    return {node.input[0]: b.op("Div", [grads[0], _scale(b, node, a)], "q_T")}
