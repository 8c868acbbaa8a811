"""Pooling: max-pool switches as a scatter-add, average pools as a uniform transposed conv, Lp pools
as that window sum weighted by their exact derivative."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from cnncli.frontend.geometry import Window, window
from cnncli.reverse.builder import Builder, shape_of
from cnncli.reverse.conv import transpose_padding
from cnncli.reverse.rules import register


@register("MaxPool")
def _maxpool(b: Builder, node, a, grads) -> dict:
    """Switch unpooling as a scatter-add: windows that share a switch add their signals."""
    x = node.input[0]
    xs, ys = shape_of(b, x), shape_of(b, node.output[0])
    if len(node.output) > 1 and node.output[1]:
        idx_name = node.output[1]
        storage = int(a.get("storage_order", 0))
    else:
        idx_name = f"cnncli/indices/{node.output[0]}"
        b.extra_outputs[idx_name] = (node.name or node.output[0], 1)
        b.extra_shapes[idx_name] = ["N", *ys[1:]]
        storage = 0
    plane = int(np.prod(xs[1:]))
    b.needed.setdefault(idx_name, TensorProto.INT64)
    idx = b.op("Mod", [b.fwd(idx_name), b.ints(plane)], "local_idx")  # drop the forward batch offset
    if storage == 1:  # column-major indices: convert to row-major
        hw = int(np.prod(xs[2:]))
        h, w = xs[2], xs[3]
        c = b.op("Div", [idx, b.ints(hw)])
        r = b.op("Mod", [idx, b.ints(hw)])
        row = b.op("Mod", [r, b.ints(h)])
        colm = b.op("Div", [r, b.ints(h)])
        idx = b.op("Add", [b.op("Mul", [c, b.ints(hw)]), b.op("Add", [b.op("Mul", [row, b.ints(w)]), colm])])
    n_out = int(np.prod(ys[1:]))
    flat_r = b.op("Reshape", [grads[0], b.ints([-1, n_out])], "flat")
    idx = b.op("Reshape", [idx, b.ints([-1, n_out])], "flat_idx")
    idx = b.op("Expand", [idx, b.op("Shape", [flat_r])], "idx")
    zeros = b.op("Reshape", [b.zeros_like_batch(grads[0], xs), b.ints([-1, plane])], "flat0")
    g = b.op("ScatterElements", [zeros, idx, flat_r], "unpool", axis=1, reduction="add")
    return {x: b.reshape(g, xs, "unpooled")}


def _pool_divisors(win: Window, in_spatial, out_spatial, include_pad: bool) -> np.ndarray:
    """How many input positions each AveragePool window divides by, per output position."""
    per_axis = []
    for n, o, k, s, d, pb, pe in zip(in_spatial, out_spatial, win.kernel, win.strides, win.dilations, win.pads_begin, win.pads_end):
        counts = []
        for i in range(o):
            taps = i * s - pb + d * np.arange(k)
            lo, hi = (-pb, n + pe) if include_pad else (0, n)
            counts.append(int(np.sum((taps >= lo) & (taps < hi))))
        per_axis.append(np.asarray(counts, dtype=np.float64))
    div = per_axis[0]
    for c in per_axis[1:]:
        div = np.multiply.outer(div, c)
    return div


@register("AveragePool")
def _avgpool(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    xs, ys = shape_of(b, x), shape_of(b, node.output[0])
    win = window(node, xs, None)
    div = _pool_divisors(win, xs[2:], ys[2:], bool(a.get("count_include_pad", 0)))
    R = b.op("Mul", [grads[0], b.const((1.0 / div)[None, None])], "avg_div")
    return {x: window_sum_T(b, R, win, xs, ys)}


def window_sum_T(b: Builder, R: str, win: Window, xs, ys) -> str:
    """The adjoint of summing each window (per channel): a depthwise ConvTranspose with ones."""
    channels = xs[1]
    ones = np.ones((channels, 1, *win.kernel), dtype=np.float32)
    pads_end, out_pad = transpose_padding(win, xs[2:], ys[2:])
    return b.op(
        "ConvTranspose", [R, b.const(ones, "ones")], "avg_T", group=channels, strides=list(win.strides),
        dilations=list(win.dilations), pads=list(win.pads_begin) + pads_end, output_padding=out_pad,
        kernel_shape=list(win.kernel),
    )


def _lp_T(b: Builder, p: float, x: str, y: str, R: str, scattered) -> str:
    """y = (Σ |x|^p)^(1/p) over windows: dx = |x|^(p−1)·sign(x) · Σ_windows R·y^(1−p), where
    ``scattered`` spreads a signal on y back over each window (0 where y is 0)."""
    xf, yf = b.fwd(x), b.fwd(y)
    if p == 1:
        return b.op("Mul", [scattered(R), b.op("Sign", [xf])], "lp1_T")
    live = b.op("Greater", [yf, b.const(0.0)], "lp_live")
    safe = b.op("Where", [live, yf, b.const(1.0)], "lp_safe")
    w = b.op("Where", [live, b.op("Mul", [R, b.op("Pow", [safe, b.const(1.0 - p)])]), b.const(0.0)], "lp_w")
    if p == 2:
        return b.op("Mul", [scattered(w), xf], "lp2_T")
    factor = b.op("Mul", [b.op("Pow", [b.op("Abs", [xf]), b.const(p - 1.0)]), b.op("Sign", [xf])], "lp_dabs")
    return b.op("Mul", [scattered(w), factor], "lp_T")


@register("LpPool")
def _lppool(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    xs, ys = shape_of(b, x), shape_of(b, node.output[0])
    win = window(node, xs, None)
    return {x: _lp_T(b, float(a.get("p", 2)), x, node.output[0], grads[0], lambda t: window_sum_T(b, t, win, xs, ys))}


@register("GlobalLpPool")
def _global_lppool(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    return {x: _lp_T(b, float(a.get("p", 2)), x, node.output[0], grads[0], lambda t: t)}  # broadcast over the plane


@register("GlobalAveragePool")
def _global_avg(b: Builder, node, a, grads) -> dict:
    xs = shape_of(b, node.input[0])
    spatial = xs[2:]
    fill = np.full((1, 1, *spatial), 1.0 / float(np.prod(spatial)), dtype=np.float32)
    return {node.input[0]: b.op("Mul", [grads[0], b.const(fill, "spread")], "gap_T")}


@register("GlobalMaxPool")
def _global_max(b: Builder, node, a, grads) -> dict:
    # One switch per channel: the first maximum (ArgMax), as MaxPool picks. Masking every position
    # equal to the max would count a value several times when it appears in several places (an
    # overlapping MaxPool before this one copies its maxima), giving a multiple of the gradient.
    x = node.input[0]
    xs = shape_of(b, x)
    flat = b.op("Reshape", [b.fwd(x), b.ints([-1, xs[1], int(np.prod(xs[2:]))])], "gmp_flat")
    arg = b.op("ArgMax", [flat], "gmp_arg", axis=2, keepdims=1)
    zeros = b.op("ConstantOfShape", [b.op("Shape", [flat])], "zeros", value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0]))
    ones = b.op("ConstantOfShape", [b.op("Shape", [arg])], "ones", value=helper.make_tensor("o", TensorProto.FLOAT, [1], [1.0]))
    mask = b.reshape(b.op("ScatterElements", [zeros, arg, ones], "gmp_switch", axis=2), xs, "gmp_mask")
    return {x: b.op("Mul", [grads[0], mask], "gmp_T")}

