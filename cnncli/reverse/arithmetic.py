"""Elementwise arithmetic: Add, Sub, Sum, Mul, Div, with broadcasting undone."""

from __future__ import annotations

from cnncli.reverse.builder import Builder, carries_signal, shape_of, unsupported
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
