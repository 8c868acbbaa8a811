"""Softmax and LogSoftmax: the exact gradient in every mode.

    Softmax     y = softmax(x):   dx = y·(R − Σ R·y)
    LogSoftmax  y = log softmax:  dx = R − exp(y)·Σ R

with Σ over the normalized axes. From opset 13 that is ``axis`` alone (default −1); before it the
input was coerced to 2-D at ``axis`` (default 1), so the sum runs over every axis from ``axis`` on.
The batch axis of size 1 is left out of the sum (the reverse rows are independent). Hardmax is
piecewise constant: it carries no signal (rules.NO_SIGNAL).
"""

from __future__ import annotations

from cnncli.reverse.builder import Builder, shape_of
from cnncli.reverse.reductions import keep_batch, sum_over
from cnncli.reverse.rules import register


def normalized_axes(b: Builder, node, a) -> list[int]:
    rank = len(shape_of(b, node.input[0]))
    if default_opset(b.graph.model) < 13:
        first = int(a.get("axis", 1)) % rank
        return list(range(first, rank))
    return [int(a.get("axis", -1)) % rank]


@register("Softmax", "LogSoftmax")
def _softmax(b: Builder, node, a, grads) -> dict:
    x, R = node.input[0], grads[0]
    axes = keep_batch(node, shape_of(b, x), normalized_axes(b, node, a), True)
    y = b.fwd(node.output[0])
    if node.op_type == "Softmax":
        dot = sum_over(b, b.op("Mul", [R, y]), axes, "dot")
        return {x: b.op("Mul", [y, b.op("Sub", [R, dot])], "dsoftmax")}
    total = sum_over(b, R, axes, "total")
    return {x: b.op("Sub", [R, b.op("Mul", [b.op("Exp", [y]), total])], "dlogsoftmax")}


def default_opset(model) -> int:
    return next((int(i.version) for i in model.opset_import if i.domain in ("", "ai.onnx")), 1)
