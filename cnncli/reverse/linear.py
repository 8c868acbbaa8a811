"""Gemm and MatMul: products with the other operand, transposed."""

from __future__ import annotations

from cnncli.reverse.builder import Builder, carries_signal, shape_of, unsupported
from cnncli.reverse.rules import register


@register("Gemm")
def _gemm(b: Builder, node, a, grads) -> dict:
    A, B = node.input[0], node.input[1]
    alpha = float(a.get("alpha", 1.0))
    ta, tb = int(a.get("transA", 0)), int(a.get("transB", 0))
    R = grads[0]
    if alpha != 1.0:
        R = b.op("Mul", [R, b.const(alpha)], "alpha")
    out = {}
    if carries_signal(b, A):
        # A' = op(A); dA' = R · op(B)ᵀ; dA = dA' or its transpose
        g = b.op("Gemm", [R, b.fwd(B)], "gemm_dA", transB=0 if tb else 1)
        out[A] = b.op("Transpose", [g], "T", perm=[1, 0]) if ta else g
    if carries_signal(b, B):
        g = b.op("Gemm", [b.fwd(A), R], "gemm_dB", transA=0 if ta else 1)
        out[B] = b.op("Transpose", [g], "T", perm=[1, 0]) if tb else g
    if len(node.input) > 2 and carries_signal(b, node.input[2]):
        beta = float(a.get("beta", 1.0))
        g = b.op("Mul", [grads[0], b.const(beta)], "beta") if beta != 1.0 else grads[0]
        out[node.input[2]] = b.reduce_to(g, shape_of(b, node.output[0]), shape_of(b, node.input[2]))
    return out


def _swap_last(b: Builder, name: str, rank: int) -> str:
    perm = list(range(rank))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    return b.op("Transpose", [name], "T", perm=perm)


@register("MatMul")
def _matmul(b: Builder, node, a, grads) -> dict:
    A, B = node.input
    sa, sb, sy = shape_of(b, A), shape_of(b, B), shape_of(b, node.output[0])
    if len(sa) < 2 or len(sb) < 2:
        raise unsupported(node, "with a 1-D operand is not supported")
    out = {}
    if carries_signal(b, A):
        out[A] = b.reduce_to(b.op("MatMul", [grads[0], _swap_last(b, b.fwd(B), len(sb))], "mm_dA"), sy, sa)
    if carries_signal(b, B):
        out[B] = b.reduce_to(b.op("MatMul", [_swap_last(b, b.fwd(A), len(sa)), grads[0]], "mm_dB"), sy, sb)
    return out
