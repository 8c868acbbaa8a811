"""Elementwise arithmetic: Add, Sub, Sum, Mul, Div, Mean, Max, Min, Where, with broadcasting undone."""

from __future__ import annotations

import numpy as np
import onnx

from cnncli.reverse.activations import relu_family
from cnncli.reverse.builder import Builder, carries_signal, shape_of, unsupported
from cnncli.reverse.pointwise import accumulate
from cnncli.reverse.rules import register


@register("Add", "Sub", "Sum")
def _add_sub(b: Builder, node, a, grads) -> dict:
    out, ys = {}, shape_of(b, node.output[0])
    for slot, name in enumerate(node.input):
        if not carries_signal(b, name):
            continue
        g = grads[0]
        if node.op_type == "Sub" and slot == 1:
            g = b.op("Neg", [g], "neg")
        g = b.reduce_to(g, ys, shape_of(b, name))
        out[name] = b.op("Add", [out[name], g], "acc") if name in out else g
    return out


@register("Mul")
def _mul(b: Builder, node, a, grads) -> dict:
    A, B = node.input
    out, ys = {}, shape_of(b, node.output[0])
    if carries_signal(b, A):
        out[A] = b.reduce_to(b.op("Mul", [grads[0], b.fwd(B)], "dmul"), ys, shape_of(b, A))
    if carries_signal(b, B):
        g = b.reduce_to(b.op("Mul", [grads[0], b.fwd(A)], "dmul"), ys, shape_of(b, B))
        out[B] = b.op("Add", [out[B], g], "acc") if B in out else g
    return out


@register("Div")
def _div(b: Builder, node, a, grads) -> dict:
    A, B = node.input
    if carries_signal(b, B):
        raise unsupported(node, "divides by a tensor computed from the input; not supported")
    return {A: b.reduce_to(b.op("Div", [grads[0], b.fwd(B)], "ddiv"), shape_of(b, node.output[0]), shape_of(b, A))}


@register("Mean")
def _mean(b: Builder, node, a, grads) -> dict:
    out, ys = {}, shape_of(b, node.output[0])
    g = b.op("Mul", [grads[0], b.const(1.0 / len(node.input))], "mean")
    for name in node.input:
        if carries_signal(b, name):
            accumulate(out, name, b.reduce_to(g, ys, shape_of(b, name)), b)
    return out


@register("Max", "Min")
def _max_min(b: Builder, node, a, grads) -> dict:
    """The signal goes to the input(s) holding the result; where several inputs tie, it is split
    evenly between them (torch's rule for maximum/minimum and amax/amin). A constant input that
    ties takes its share too (Max(x, 0) at x = 0 passes half)."""
    out, ys = {}, shape_of(b, node.output[0])
    if len(node.input) == 1:
        return {node.input[0]: grads[0]}
    relu_of = _relu_input(b, node, ys)
    if relu_of is not None:  # Max(x, 0), as Keras and tf2onnx write a ReLU: it is one, in every mode
        return relu_family(b, onnx.helper.make_node("Relu", [relu_of], [node.output[0]], name=node.name), {}, grads)
    y = b.fwd(node.output[0])
    masks = [b.float_mask(b.op("Equal", [b.fwd(name), y], "is_max")) for name in node.input]
    share = b.op("Div", [grads[0], b.op("Sum", masks, "ties")], "share")
    for name, mask in zip(node.input, masks):
        if carries_signal(b, name):
            accumulate(out, name, b.reduce_to(b.op("Mul", [share, mask], "dmax"), ys, shape_of(b, name)), b)
    return out


def _relu_input(b: Builder, node, ys) -> str | None:
    """x where ``node`` is Max(x, 0) (either order; the 0 a stored constant of zeros, x the output's
    shape): a ReLU; else None."""
    if node.op_type != "Max" or len(node.input) != 2:
        return None
    signal = [name for name in node.input if carries_signal(b, name)]
    if len(signal) != 1 or tuple(shape_of(b, signal[0])) != tuple(ys):
        return None
    other = node.input[1] if signal[0] == node.input[0] else node.input[0]
    value = b.value(other)
    if value is None or np.asarray(value).size == 0 or np.any(np.asarray(value) != 0):
        return None
    return signal[0]


@register("Where")
def _where(b: Builder, node, a, grads) -> dict:
    """The signal goes to X where the condition holds, to Y elsewhere."""
    cond, X, Y = node.input
    out, ys = {}, shape_of(b, node.output[0])
    zero = b.const(0.0, "zero")
    for name, branch in ((X, [grads[0], zero]), (Y, [zero, grads[0]])):
        if carries_signal(b, name):
            g = b.op("Where", [b.fwd(cond), *branch], "dwhere")
            accumulate(out, name, b.reduce_to(g, ys, shape_of(b, name)), b)
    return out
