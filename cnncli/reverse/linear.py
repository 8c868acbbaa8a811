"""Gemm, MatMul and Einsum: products with the other operands, transposed; Det: its cofactors."""

from __future__ import annotations

import numpy as np

from cnncli.reverse.builder import Builder, carries_signal, shape_of, unsupported
from cnncli.reverse.rules import register
from cnncli.reverse.tiling import unbroadcast


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
    """dA = R·Bᵀ, dB = Aᵀ·R, each summed over the batch axes it was broadcast along; both operands
    may carry the signal (attention), and may be the same tensor (x·x)."""
    return matmul_adjoint(b, node, grads, lambda: b.fwd(node.input[0]), lambda: b.fwd(node.input[1]))


def matmul_adjoint(b: Builder, node, grads, fa, fb) -> dict:
    """The MatMul rule with the operands' forward values made on demand by ``fa()`` and ``fb()``
    as reverse-graph tensors (a MatMulInteger's operands less their zero points, as float)."""
    A, B = node.input[:2]
    sa, sb, sy = shape_of(b, A), shape_of(b, B), shape_of(b, node.output[0])
    if len(sa) < 2 or len(sb) < 2:
        return _matmul_vector(b, node, grads[0], sa, sb, sy, fa, fb)
    out = {}
    if carries_signal(b, A):
        out[A] = unbroadcast(b, node, b.op("MatMul", [grads[0], _swap_last(b, fb(), len(sb))], "mm_dA"), sy, sa)
    if carries_signal(b, B):
        if len(sy) == 2:  # [1, k]·[k, m]: B has no batch axis; each row's dB = Aᵀ·R is [k, m], stacked
            if sa[0] != 1:
                raise unsupported(node, "with a 2-D right operand computed from the input is not supported")
            col = b.op("Unsqueeze", [fa(), b.ints([2])], "mm_col")  # [N, k, 1]
            g = b.op("MatMul", [col, b.op("Unsqueeze", [grads[0], b.ints([1])])], "mm_dB")  # [K, k, m]
            g = b.op("Reshape", [g, b.ints([-1, sb[1]])], "mm_dB_rows")
        else:
            g = unbroadcast(b, node, b.op("MatMul", [_swap_last(b, fa(), len(sa)), grads[0]], "mm_dB"), sy, sb)
        out[B] = b.op("Add", [out[B], g], "acc") if B in out else g
    return out


def _matmul_vector(b: Builder, node, g: str, sa, sb, sy, fa, fb) -> dict:
    """A 1-D operand: numpy's rule makes it [1, k] (left) or [k, 1] (right) and drops that axis
    from the result; the output has no batch axis of its own, so the reverse takes one signal
    shaped as the output and sums over every broadcast axis."""
    A, B = node.input[:2]
    sa2 = [1, *sa] if len(sa) == 1 else list(sa)
    sb2 = [*sb, 1] if len(sb) == 1 else list(sb)
    lead = [max(x, y) for x, y in zip([1] * (len(sb2) - len(sa2)) + sa2[:-2], [1] * (len(sa2) - len(sb2)) + sb2[:-2])]
    sy2 = [*lead, sa2[-2], sb2[-1]]
    g = b.op("Reshape", [g, b.ints(sy2)], "mm_out")
    a2 = b.op("Reshape", [fa(), b.ints(sa2)], "mm_a")
    b2 = b.op("Reshape", [fb(), b.ints(sb2)], "mm_b")
    out = {}
    if carries_signal(b, A):
        d = b.reduce_to(b.op("MatMul", [g, _swap_last(b, b2, len(sb2))], "mm_dA"), sy2, sa2)
        out[A] = b.op("Reshape", [d, b.ints(list(sa))], "mm_dA")
    if carries_signal(b, B):
        d = b.reduce_to(b.op("MatMul", [_swap_last(b, a2, len(sa2)), g], "mm_dB"), sy2, sb2)
        d = b.op("Reshape", [d, b.ints(list(sb))], "mm_dB")
        out[B] = b.op("Add", [out[B], d], "acc") if B in out else d
    return out


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def einsum_terms(equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """The operands' and the output's subscripts, with '...' spelled out in unused letters and an
    implicit output (no '->') made explicit as numpy and ONNX define it."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    spare = [c for c in _LETTERS if c not in eq]
    n_ell = max((r - len(t.replace("...", "")) for t, r in zip(terms, ranks) if "..." in t), default=0)
    ell = "".join(spare[:n_ell])
    terms = [t.replace("...", ell[n_ell - (r - len(t.replace("...", ""))):]) if "..." in t else t for t, r in zip(terms, ranks)]
    if arrow:
        out = rhs.replace("...", ell)
    else:
        counts = {c: sum(t.count(c) for t in terms) for c in "".join(terms)}
        out = ell + "".join(sorted(c for c, k in counts.items() if k == 1 and c not in ell))
    return terms, out


@register("Einsum")
def _einsum(b: Builder, node, a, grads) -> dict:
    """Each operand's signal is the einsum of the output's signal with the other operands, into
    that operand's subscripts: a letter only it holds is summed over in the forward pass (its
    signal is the same along it); a repeated letter (a diagonal) gets the signal on the diagonal
    only (an identity matrix joins the einsum)."""
    shapes = [shape_of(b, n) for n in node.input]
    terms, out = einsum_terms(a["equation"], [len(s) for s in shapes])
    sizes = {}
    for t, s in zip(terms, shapes):
        for c, n in zip(t, s):
            if sizes.setdefault(c, n) != n:
                raise unsupported(node, "broadcasting a subscript is not supported")
    spare = [c for c in _LETTERS if c not in "".join(terms) + out]
    batch = out[:1]
    signal = [i for i, n in enumerate(node.input) if carries_signal(b, n)]
    # the reverse rows on the batch axis when it stays the first axis everywhere; otherwise the
    # batch axis is mixed and the reverse takes one signal shaped as the output
    rows = bool(batch) and all(terms[i][:1] == batch for i in signal) and all(batch not in t[1:] for t in terms)
    result = {}
    for i in signal:
        name, t = node.input[i], terms[i]
        others = [j for j in range(len(terms)) if j != i]
        fresh, eyes = "", []
        for c in t:  # a repeated letter: a fresh one each time after the first, tied by an identity
            if c in t[: len(fresh)]:
                f = spare.pop(0)
                eyes.append((c + f, sizes[c]))
                fresh += f
            else:
                fresh += c
        seen = set(out).union(*(terms[j] for j in others)).union(*(e for e, _ in eyes))
        kept = "".join(c for c in fresh if c in seen)
        ins = [grads[0]] + [_rows_like(b, b.fwd(node.input[j]), grads[0], len(shapes[j])) if rows and terms[j][:1] == batch
                            else b.fwd(node.input[j]) for j in others]
        ins += [b.const(np.eye(n, dtype=np.float32), "eye") for _, n in eyes]
        eq = ",".join([out] + [terms[j] for j in others] + [e for e, _ in eyes]) + "->" + kept
        g = b.op("Einsum", ins, "einsum_T", equation=eq)
        if kept != fresh:  # letters summed within this operand alone: the signal spread along them
            g = b.op("Unsqueeze", [g, b.ints([k for k, c in enumerate(fresh) if c not in seen])], "einsum_keep")
            dims = [sizes[c] for c in t]
            full = (b.op("Concat", [b.op("Slice", [b.op("Shape", [g]), b.ints([0]), b.ints([1])]), b.ints(dims[1:])],
                         "einsum_shape", axis=0) if rows else b.ints(dims))
            g = b.op("Expand", [g, full], "einsum_spread")
        result[name] = b.op("Add", [result[name], g], "acc") if name in result else g
    return result


def _rows_like(b: Builder, t: str, g: str, rank: int) -> str:
    """A forward tensor (batch 1, or one per row) expanded to the K rows of the signal ``g``."""
    rows = b.op("Concat", [b.op("Slice", [b.op("Shape", [g]), b.ints([0]), b.ints([1])]), b.ints([1] * (rank - 1))],
                "rows_shape", axis=0)
    return b.op("Expand", [t, rows], "rows")


@register("Det")
def _det(b: Builder, node, a, grads) -> dict:
    """∂det X/∂X_ij is the cofactor (−1)^(i+j)·det(X without row i and column j): the minors taken
    with Gather and Det, so a singular X is exact too (no inverse)."""
    x = node.input[0]
    xs = shape_of(b, x)
    n, lead = xs[-1], len(xs) - 2
    g = b.op("Unsqueeze", [grads[0], b.ints([-2, -1])], "det_g")
    if n == 1:
        return {x: b.op("Expand", [g, b.ints([1] * len(xs))], "det_T")}
    others = b.ints([[k for k in range(n) if k != i] for i in range(n)], "det_others")
    minors = b.op("Gather", [b.op("Gather", [b.fwd(x), others], "det_rows", axis=-2), others], "det_cols", axis=-1)
    minors = b.op("Transpose", [minors], "det_minors", perm=[*range(lead), lead, lead + 2, lead + 1, lead + 3])
    signs = np.fromfunction(lambda i, j: (-1.0) ** (i + j), (n, n))
    cofactors = b.op("Mul", [b.op("Det", [minors], "det_minor"), b.const(signs, "det_signs")], "det_cofactors")
    return {x: b.op("Mul", [g, cofactors], "det_T")}
