"""Reduce* ops: the signal spread back over the reduced axes,
times the exact derivative, in every mode.

Axes come as an attribute (before opset 18; ReduceSum before 13) or as the second input (read at
build time); none given means every axis, or none at all with ``noop_with_empty_axes``. The batch
axis of size 1 is never summed over in the reverse graph, whose rows (one per projected channel)
are independent; a reduction over a larger batch axis, or one that drops the batch axis, is refused.
ReduceMax and ReduceMin split the signal evenly between tied maxima (torch's amax/amin rule).
"""

from __future__ import annotations

import numpy as np

from cnncli.reverse.builder import Builder, shape_of, unsupported
from cnncli.reverse.rules import register

REDUCE_OPS = ("ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
              "ReduceMax", "ReduceMin", "ReduceProd")


def reduce_axes(b: Builder, node, a, rank: int) -> list[int] | None:
    """The reduced axes, sorted and non-negative; None for a no-op (empty axes with noop_with_empty_axes)."""
    axes = a.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        v = b.value(node.input[1])
        if v is None:
            raise unsupported(node, "with axes that could not be computed is not supported")
        axes = [int(i) for i in v.reshape(-1)]
    if not axes:
        if int(a.get("noop_with_empty_axes", 0)):
            return None
        axes = list(range(rank))
    return sorted({ax % rank for ax in axes})


def keep_batch(node, xs, axes: list[int], keepdims: bool) -> list[int]:
    """``axes`` without the batch axis, which the reverse graph must not sum over (see the module doc)."""
    if 0 not in axes:
        return axes
    if xs[0] != 1 or not keepdims:
        raise unsupported(node, "reduces over the batch axis; not supported")
    return [ax for ax in axes if ax != 0]


def spread(b: Builder, t: str, xs, axes: list[int], keepdims: bool) -> str:
    """A tensor of the reduced shape brought back to rank len(xs) (size 1 along ``axes``)."""
    return t if keepdims else b.op("Unsqueeze", [t, b.ints(axes)], "keep")


def sum_over(b: Builder, t: str, axes: list[int], hint: str = "sum") -> str:
    return b.op("ReduceSum", [t, b.ints(axes)], hint, keepdims=1) if axes else t


@register(*REDUCE_OPS, values=(1,))
def _reduce(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    xs = shape_of(b, x)
    axes = reduce_axes(b, node, a, len(xs))
    if axes is None:
        return {x: _noop(b, node, grads[0])}
    keepdims = bool(int(a.get("keepdims", 1)))
    kept = keep_batch(node, xs, axes, keepdims)
    R = spread(b, grads[0], xs, axes, keepdims)
    xf = b.fwd(x)
    y = spread(b, b.fwd(node.output[0]), xs, axes, keepdims)
    d = _DERIVATIVE[node.op_type](b, xf, y, kept)
    if node.op_type == "ReduceMean":
        d = b.const(1.0 / float(np.prod([xs[ax] for ax in axes])), "mean")
    g = b.op("Mul", [R, d], "dreduce") if d is not None else R
    return {x: b.op("Expand", [g, b.ints([1, *xs[1:]])], "spread")}


def _noop(b: Builder, node, R: str) -> str:
    """noop_with_empty_axes: the op is applied elementwise (ReduceSumSquare squares, ReduceL1 takes |x|...)."""
    fake = _DERIVATIVE[node.op_type]
    x = b.fwd(node.input[0])
    d = fake(b, x, b.fwd(node.output[0]), [])
    return b.op("Mul", [R, d], "dreduce") if d is not None else R


def _max_min(b: Builder, x: str, y: str, axes: list[int]) -> str:
    mask = b.float_mask(b.op("Equal", [x, y], "is_max"))
    return b.op("Div", [mask, sum_over(b, mask, axes, "ties")], "share")


def _prod(b: Builder, x: str, y: str, axes: list[int]) -> str:
    """The product of the other elements, exact with zeros: y/x where no element is 0; where one
    is, the product of the rest at that element and 0 elsewhere; 0 everywhere with two or more."""
    zero = b.op("Equal", [x, b.const(0.0)], "is_zero")
    nonzero = b.op("Where", [zero, b.const(1.0), x], "nonzero")
    rest = b.op("ReduceProd", [nonzero], "rest", axes=axes, keepdims=1) if axes else nonzero
    zeros = sum_over(b, b.float_mask(zero), axes, "zeros")
    at_zero = b.op("Where", [b.op("Equal", [zeros, b.const(1.0)]), rest, b.const(0.0)], "at_zero")
    elsewhere = b.op("Where", [b.op("Equal", [zeros, b.const(0.0)]), b.op("Div", [rest, nonzero]), b.const(0.0)], "elsewhere")
    return b.op("Where", [zero, at_zero, elsewhere], "dprod")


_DERIVATIVE = {
    "ReduceMean": lambda b, x, y, axes: None,  # 1/n, set by the rule (the reduced axes' sizes)
    "ReduceSum": lambda b, x, y, axes: None,
    "ReduceSumSquare": lambda b, x, y, axes: b.op("Mul", [x, b.const(2.0)], "d2x"),
    "ReduceL1": lambda b, x, y, axes: b.op("Sign", [x]),
    # x/‖x‖, 0 where the norm is 0 (torch's norm gradient there)
    "ReduceL2": lambda b, x, y, axes: b.op("Where", [b.op("Equal", [y, b.const(0.0)]), b.const(0.0),
                                                     b.op("Div", [x, y])], "dl2"),
    "ReduceLogSum": lambda b, x, y, axes: b.op("Exp", [b.op("Neg", [y])], "dlogsum"),
    "ReduceLogSumExp": lambda b, x, y, axes: b.op("Exp", [b.op("Sub", [x, y])], "softmax"),
    "ReduceMax": _max_min,
    "ReduceMin": _max_min,
    "ReduceProd": _prod,
}
