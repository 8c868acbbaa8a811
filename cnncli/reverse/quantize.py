"""QuantizeLinear and DequantizeLinear: their scale in reverse, straight-through for the rounding
(the clipped straight-through estimator), so a QDQ pair passes R·scale·(1/scale) inside its range.

    DequantizeLinear   y = (q − zero_point)·scale              →  dq = R·scale
    QuantizeLinear     q = clip(round(x / scale) + zp)         →  dx = R / scale where x is inside
                                                                   the range, 0 where it clips

The scale is per tensor, or per axis (a 1-D scale along ``axis``); blocked scales (opset 21
``block_size``) are refused. A DequantizeLinear scale on the signal's path (onnx marks it
differentiable; a float input whose scale a model computes) gets dscale = Σ R·(q − zero_point)
over the axes it is broadcast along.

onnxruntime's dynamic quantization (DynamicQuantizeLinear → ConvInteger/MatMulInteger → Cast →
Mul by the scales) gets the same straight-through estimator: DynamicQuantizeLinear is a
QuantizeLinear whose scale and zero point it computes from x (held constant in reverse), and the
integer Conv/MatMul is the float one with weights float(w − w_zero_point), on the integer-domain
signal; the integer Cast passes the signal and the Mul by the scales has its own rule.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from cnncli.reverse.builder import Builder, carries_signal, shape_of, unsupported
from cnncli.reverse.conv import conv_adjoint
from cnncli.reverse.linear import matmul_adjoint
from cnncli.reverse.rules import register


def _scale_shape(b: Builder, node, a) -> list[int]:
    """The scale as it broadcasts against x: [] (per tensor) or [1, …, C, …, 1] (along ``axis``)."""
    if int(a.get("block_size", 0)):
        raise unsupported(node, "with blocked scales (block_size) is not supported")
    xs, ss = shape_of(b, node.input[0]), shape_of(b, node.input[1])
    if len(ss) == 0 or (len(ss) == 1 and ss[0] == 1):
        return []
    axis = int(a.get("axis", 1)) % len(xs)
    return [1] * axis + [-1] + [1] * (len(xs) - axis - 1)


def _scale(b: Builder, node, a, signal_ok: bool = False) -> str:
    if carries_signal(b, node.input[1]) and not signal_ok:
        raise unsupported(node, "with a scale computed from the input is not supported")
    shape = _scale_shape(b, node, a)
    scale = b.op("Cast", [b.fwd(node.input[1])], "scale", to=1)  # float16/bfloat16 scales as float32
    return b.op("Reshape", [scale, b.ints(shape)], "scale_axis") if shape else scale


@register("DequantizeLinear")
def _dequantize(b: Builder, node, a, grads) -> dict:
    out = {node.input[0]: b.op("Mul", [grads[0], _scale(b, node, a, signal_ok=True)], "dq_T")}
    if carries_signal(b, node.input[1]):  # y = (q − zp)·scale: dscale = R·(q − zp), summed to the scale's shape
        xs, ys, shape = shape_of(b, node.input[0]), shape_of(b, node.output[0]), _scale_shape(b, node, a)
        axis = int(a.get("axis", 1)) % len(xs)
        if shape and axis == 0:
            raise unsupported(node, "with a scale along axis 0 (the batch) on the signal's path is not supported")
        g = b.op("Mul", [grads[0], _less_zero_point(b, node, 0, 2, axis)], "dscale")
        if shape:  # [K, C, 1, …] → the scale's rows stacked, [K·C]
            g = b.op("Reshape", [b.reduce_to(g, ys, [1 if d == 1 else n for d, n in zip(shape, ys)]), b.ints([-1])], "dscale")
        else:
            g = b.reduce_to(g, ys, shape_of(b, node.input[1]))
        out[node.input[1]] = g
    return out


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


@register("DynamicQuantizeLinear")
def _dynamic_quantize(b: Builder, node, a, grads) -> dict:
    """y = saturate(round(x / y_scale) + y_zero_point) in uint8, y_scale and y_zero_point computed
    from x's range: y carries R / y_scale back to x, straight through the rounding, cut where it
    clips (x outside [(0 − zp)·scale, (255 − zp)·scale], which the zero point's rounding can leave
    by half a step at x's extremes). The scale is treated as a constant, although it is computed
    from x (the straight-through estimator of quantization-aware training); y_scale and
    y_zero_point carry no signal."""
    x = node.input[0]
    scale = b.fwd(node.output[1])
    zp = b.op("Cast", [b.fwd(node.output[2])], "zp", to=TensorProto.FLOAT)
    lo = b.op("Mul", [b.op("Neg", [zp], "neg_zp"), scale], "q_lo")
    hi = b.op("Mul", [b.op("Sub", [b.const(255.0), zp], "q_top"), scale], "q_hi")
    xf = b.fwd(x)
    inside = b.op("Mul", [b.float_mask(b.op("GreaterOrEqual", [xf, lo], "above")),
                          b.float_mask(b.op("LessOrEqual", [xf, hi], "below"))], "inside")
    return {x: b.op("Mul", [b.op("Div", [grads[0], scale], "q_T"), inside], "q_clip")}


def _less_zero_point(b: Builder, node, slot: int, zp_slot: int, axis: int | None) -> str:
    """Operand ``slot`` of an integer op as float, less its zero point (input ``zp_slot``); a 1-D
    zero point runs along ``axis`` of the operand (None: along its last axis, as it broadcasts)."""
    t = b.op("Cast", [b.fwd(node.input[slot])], "int_f", to=TensorProto.FLOAT)
    if len(node.input) <= zp_slot or not node.input[zp_slot]:
        return t
    zp = b.op("Cast", [b.fwd(node.input[zp_slot])], "zp", to=TensorProto.FLOAT)
    zs, rank = shape_of(b, node.input[zp_slot]), len(shape_of(b, node.input[slot]))
    if axis is not None and len(zs) == 1 and zs[0] != 1:
        zp = b.op("Reshape", [zp, b.ints([-1] + [1] * (rank - 1 - axis))], "zp_axis")
    return b.op("Sub", [t, zp], "less_zp")


@register("ConvInteger")
def _conv_integer(b: Builder, node, a, grads) -> dict:
    """The reverse of a Conv with weights float(w − w_zero_point) (per output channel or one),
    on the integer-domain signal; x's zero point is a shift and passes it unchanged."""
    return {node.input[0]: conv_adjoint(b, node, grads[0], _less_zero_point(b, node, 1, 3, 0))}


@register("MatMulInteger")
def _matmul_integer(b: Builder, node, a, grads) -> dict:
    """The MatMul rule on float(A − a_zero_point) and float(B − b_zero_point): a 1-D zero point
    runs along A's rows (per row) and B's columns (per column)."""
    rank_a = len(shape_of(b, node.input[0]))
    return matmul_adjoint(b, node, grads, lambda: _less_zero_point(b, node, 0, 2, rank_a - 2),
                          lambda: _less_zero_point(b, node, 1, 3, None))
