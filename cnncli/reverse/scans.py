"""Scans and reversals along one axis: CumSum, CumProd and ReverseSequence, their exact transposes.

CumSum's adjoint is the cumulative sum running the other way (the same ``exclusive``). CumProd's
gradient is written without dividing by x, so a zero in the input is exact too:
dx_j = Σ_{i≥j} R_i · Π_{k≤i, k≠j} x_k, the products taken along a copy of the axis per j.
ReverseSequence permutes: its adjoint is itself. Along cnncli's batch axis (axis 0) with a batch
of one, a scan is the identity (or zero, exclusive); with a larger batch the signal is one tensor
shaped as the output, as for Tile and Gather.
"""

from __future__ import annotations

import numpy as np

from cnncli.reverse.builder import Builder, shape_of, unsupported
from cnncli.reverse.rules import register


def _scan(b: Builder, node, a, grads, transpose) -> dict:
    """The scan's signal from ``transpose(b, x, xs, axis, g, exclusive, reverse)``; along a batch
    axis of one each row is its own scan of one value (the identity, or zero when exclusive)."""
    x = node.input[0]
    xs = shape_of(b, x)
    v = b.value(node.input[1])
    if v is None:
        raise unsupported(node, "with an axis that could not be computed is not supported")
    axis = int(v.reshape(-1)[0]) % len(xs)
    exclusive, rev = int(a.get("exclusive", 0)), int(a.get("reverse", 0))
    if axis == 0 and xs[0] == 1:
        return {x: b.op("Mul", [grads[0], b.const(0.0)], "scan0") if exclusive else grads[0]}
    return {x: transpose(b, x, xs, axis, grads[0], exclusive, rev)}


@register("CumSum", values=(1,))
def _cumsum(b: Builder, node, a, grads) -> dict:
    return _scan(b, node, a, grads, lambda b, x, xs, axis, g, exclusive, rev: b.op(
        "CumSum", [g, b.ints(axis)], "cumsum_T", exclusive=exclusive, reverse=1 - rev))


def _flip(b: Builder, t: str, axis: int, n: int) -> str:
    return b.op("Gather", [t, b.ints(list(range(n - 1, -1, -1)))], "flip", axis=axis)


def _cumprod(b: Builder, t: str, axis: int, n: int, exclusive: bool) -> str:
    """The running product along ``axis`` (length n), written with Slice and Mul (opset 17)."""
    parts, run = [], None
    for i in range(n):
        cur = b.op("Slice", [t, b.ints([i]), b.ints([i + 1]), b.ints([axis])], "cp_slice")
        if exclusive:
            parts.append(run if run is not None else b.op("Add", [b.op("Mul", [cur, b.const(0.0)]), b.const(1.0)], "cp_one"))
            run = cur if run is None else b.op("Mul", [run, cur], "cp_run")
        else:
            run = cur if run is None else b.op("Mul", [run, cur], "cp_run")
            parts.append(run)
    return parts[0] if n == 1 else b.op("Concat", parts, "cumprod", axis=axis)


@register("CumProd", values=(1,))
def _cumprod_rule(b: Builder, node, a, grads) -> dict:
    return _scan(b, node, a, grads, _cumprod_T)


def _cumprod_T(b: Builder, x: str, xs, axis: int, g: str, exclusive: int, rev: int) -> str:
    n, rank = xs[axis], len(xs)
    xf = b.fwd(x)
    if rev:  # a reversed scan is the forward scan of the flipped axis
        xf, g = _flip(b, xf, axis, n), _flip(b, g, axis, n)
    # copies [..., j, ..., k, ...]: the axis k of x repeated along a new axis j, x_j replaced by 1
    copies = b.op("Unsqueeze", [xf, b.ints([axis])], "cp_copies")
    eye = np.eye(n, dtype=bool).reshape([n, n] + [1] * (rank - axis - 1))
    left_out = b.op("Where", [b.const(eye, "cp_eye", dtype=bool), b.const(1.0), copies], "cp_left_out")
    prods = _cumprod(b, left_out, axis + 1, n, bool(exclusive))  # P[j, i] = Π_{k≤i (k<i), k≠j} x_k
    # dx_j = Σ_{i ≥ j} R_i P[j, i] (i > j when exclusive: R_i does not hold x_i)
    upper = np.triu(np.ones((n, n), dtype=np.float32), 1 if exclusive else 0).reshape([n, n] + [1] * (rank - axis - 1))
    weighted = b.op("Mul", [b.op("Mul", [prods, b.op("Unsqueeze", [g, b.ints([axis])])]), b.const(upper, "cp_upper")])
    back = b.op("ReduceSum", [weighted, b.ints([axis + 1])], "cumprod_T", keepdims=0)
    return _flip(b, back, axis, n) if rev else back


@register("ReverseSequence", values=(1,))
def _reverse_sequence(b: Builder, node, a, grads) -> dict:
    """A permutation that is its own inverse: the same ReverseSequence on the signal."""
    x = node.input[0]
    xs = shape_of(b, x)
    batch_axis, time_axis = int(a.get("batch_axis", 1)), int(a.get("time_axis", 0))
    g = grads[0]
    if xs[0] == 1 and time_axis == 0:  # one step in time: nothing is reversed
        return {x: g}
    lens = b.fwd(node.input[1])
    if xs[0] == 1 and batch_axis == 0:  # the reverse rows all take the forward row's length
        k = b.op("Slice", [b.op("Shape", [g]), b.ints([0]), b.ints([1])], "rows")
        lens = b.op("Expand", [lens, k], "lens")
    return {x: b.op("ReverseSequence", [g, lens], "revseq_T", batch_axis=batch_axis, time_axis=time_axis)}
