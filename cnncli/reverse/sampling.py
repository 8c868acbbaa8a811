"""Sampling at computed positions: GridSample, AffineGrid and DeformConv.

GridSample and DeformConv read their input at positions that a tensor gives (the grid, the
offsets): each output is a weighted sum of a few input values, the taps (1 nearest, 2 linear, 4
cubic per axis). The reverse graph works the taps out from the forward positions at run time,
as onnxruntime's kernels do (indices made valid by the padding mode, weights of the fraction),
and scatter-adds the signal times each tap's weight back to its input position (ScatterElements,
reduction 'add'). Where the positions themselves are computed from the input (a spatial
transformer's grid, a deformable conv's offsets and mask), they get their exact gradient too: the
derivative of the tap weights times the input values there. No op here rectifies: the three modes
are the same.
"""

from __future__ import annotations

import numpy as np

from cnncli.reverse.builder import Builder, carries_signal, shape_of, unsupported
from cnncli.reverse.rules import register

_CUBIC_A = -0.75  # onnxruntime's (and torch's) cubic convolution coefficient
# the four cubic taps' weights as polynomials a3·u³ + a2·u² + a1·u + a0 of u = |tap − x|
_A = _CUBIC_A
_CUBIC = np.array([[_A, _A + 2, _A + 2, _A], [-5 * _A, -(_A + 3), -(_A + 3), -5 * _A],
                   [8 * _A, 0, 0, 8 * _A], [-4 * _A, 1, 1, -4 * _A]], dtype=np.float32)


def _mode(node, a) -> str:
    mode = a.get("mode", "bilinear")
    return {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)


def axis_taps(b: Builder, x: str, n: int, mode: str, padding: str, bounds: tuple[float, float]):
    """The taps along one axis of size ``n`` at coordinates ``x`` (float, last axis 1): their
    input indices (int64), weights and the weights' derivatives in x (last axis: one per tap)."""
    if mode == "nearest":
        taps = b.op("Round", [x], "nearest")
    else:
        first = b.op("Floor", [x], "floor")
        taps = first if mode == "linear" else b.op("Sub", [first, b.const(1.0)], "first")
        taps = b.op("Add", [taps, b.const(np.arange(2 if mode == "linear" else 4, dtype=np.float32))], "taps")
    if mode == "nearest":
        w, dw = b.op("Sub", [x, x], "zero"), None
        w = b.op("Add", [w, b.const(1.0)], "one")
    elif mode == "linear":  # 1 − |tap − x|
        w = b.op("Sub", [b.const(1.0), b.op("Abs", [b.op("Sub", [taps, x])])], "w_lin")
        dw = b.op("Add", [b.op("Sub", [w, w]), b.const(np.array([-1.0, 1.0], np.float32))], "dw_lin")
    else:
        u = b.op("Abs", [b.op("Sub", [taps, x])], "u")
        a3, a2, a1, a0 = (b.const(c) for c in _CUBIC)
        w = b.op("Add", [b.op("Mul", [b.op("Add", [b.op("Mul", [b.op("Add", [b.op("Mul", [a3, u]), a2]), u]), a1]), u]), a0], "w_cubic")
        d = b.op("Add", [b.op("Mul", [b.op("Add", [b.op("Mul", [b.const(3 * _CUBIC[0]), u]), b.const(2 * _CUBIC[1])]), u]), a1])
        dw = b.op("Mul", [d, b.const(np.array([1.0, 1.0, -1.0, -1.0], np.float32))], "dw_cubic")  # du/dx
    lo, hi = b.const(0.0), b.const(float(n - 1))
    if padding == "zeros":  # taps outside read 0: weight 0, index anywhere valid
        inside = b.op("And", [b.op("GreaterOrEqual", [taps, lo]), b.op("LessOrEqual", [taps, hi])], "inside")
        inside = b.float_mask(inside)
        w = b.op("Mul", [w, inside], "w_in")
        dw = b.op("Mul", [dw, inside], "dw_in") if dw is not None else None
        idx = b.op("Clip", [taps, lo, hi], "idx")
    elif padding == "border":
        idx = b.op("Clip", [taps, lo, hi], "idx")
    else:  # reflection of the index about bounds (onnxruntime's GsReflect): x_min + r − |r − (|i − x_min| mod 2r)|
        x_min, span = bounds[0], bounds[1] - bounds[0]  # (span > 0: _grid_sample refuses the rest)
        t = b.op("Mod", [b.op("Abs", [b.op("Sub", [taps, b.const(x_min)])]), b.const(2 * span)], "t", fmod=1)
        idx = b.op("Sub", [b.const(x_min + span), b.op("Abs", [b.op("Sub", [b.const(span), t])])], "reflected")
    return b.op("Cast", [idx], "idx64", to=7), w, dw  # 7: INT64


def combine_taps(b: Builder, taps: list, spatial, lead: int = 2) -> tuple[str, str, list]:
    """Per-axis taps (``lead`` leading axes, then one per tap: [N, P, t_a] each, in axis order) to
    the flat input index, the weight and, per axis, the weight's derivative in that axis's
    coordinate, all [*leading, T] with T = Π t_a."""
    r = len(taps)
    strides = [int(np.prod(spatial[a + 1:])) for a in range(r)]
    idx = w = None
    ws, dws = [], []
    for a, (ia, wa, dwa) in enumerate(taps):
        axes = b.ints([k - r for k in range(r) if k != a]) if r > 1 else None
        spread = (lambda t: b.op("Unsqueeze", [t, axes])) if axes else (lambda t: t)
        term = b.op("Mul", [spread(ia), b.ints(strides[a])], "stride")
        idx = term if idx is None else b.op("Add", [idx, term], "flat")
        ws.append(spread(wa))
        dws.append(spread(dwa) if dwa is not None else None)
    for a in range(r):
        w = ws[a] if w is None else b.op("Mul", [w, ws[a]], "w")
    flat = b.ints([0] * lead + [-1])
    grads = []
    for a in range(r):
        if dws[a] is None:
            grads.append(None)
            continue
        g = dws[a]
        for k in range(r):
            if k != a:
                g = b.op("Mul", [g, ws[k]], "dw")
        grads.append(b.op("Reshape", [g, flat], "dw_flat"))
    return b.op("Reshape", [idx, flat], "taps_flat"), b.op("Reshape", [w, flat], "w_flat"), grads


def scatter_taps(b: Builder, g: str, idx: str, w: str, lead: list[int], size: int) -> str:
    """Σ over taps of g · w added at idx: g [K, *lead, P], idx and w [N, *lead′, P, T] (lead′ of
    ones or lead) -> [K, *lead, size]."""
    contrib = b.op("Mul", [b.op("Unsqueeze", [g, b.ints([-1])]), w], "tap_signal")
    contrib = b.op("Reshape", [contrib, b.ints([0] * (1 + len(lead)) + [-1])], "tap_flat")
    at = b.op("Reshape", [idx, b.ints([0] * (1 + len(lead)) + [-1])], "at")
    at = b.op("Expand", [at, b.op("Shape", [contrib])], "at_rows")
    zeros = b.zeros_like_batch(contrib, [None, *lead, size])
    return b.op("ScatterElements", [zeros, at, contrib], "scatter_taps", axis=1 + len(lead), reduction="add")


def values_at(b: Builder, xf: str, idx: str, lead: list[int]) -> str:
    """The forward values xf [N, *lead, size] at the taps idx [N, *ones, P, T] -> [N, *lead, P·T]."""
    at = b.op("Reshape", [idx, b.ints([0] * (1 + len(lead)) + [-1])], "at")
    at = b.op("Expand", [at, b.ints([1, *lead, 1])], "at_all")
    return b.op("GatherElements", [xf, at], "tap_values", axis=1 + len(lead))


@register("GridSample")
def _grid_sample(b: Builder, node, a, grads) -> dict:
    x, grid = node.input[0], node.input[1]
    xs, gs, ys = shape_of(b, x), shape_of(b, grid), shape_of(b, node.output[0])
    r, mode = len(xs) - 2, _mode(node, a)
    padding, align = a.get("padding_mode", "zeros"), int(a.get("align_corners", 0))
    if mode not in ("nearest", "linear", "cubic"):
        raise unsupported(node, f"with mode '{mode}' is not supported")
    if padding == "reflection" and align and 1 in xs[2:]:  # (onnxruntime divides by a zero range)
        raise unsupported(node, "reflecting about an axis of one position (align_corners=1) is not supported")
    C, P, size = xs[1], int(np.prod(ys[2:])), int(np.prod(xs[2:]))
    G = b.op("Reshape", [b.fwd(grid), b.ints([0, P, r])], "grid")
    taps, scales = [], []
    for axis in range(r):  # grid component r−1−axis is the coordinate along spatial axis axis
        n = xs[2 + axis]
        comp = b.op("Gather", [G, b.ints([r - 1 - axis])], "coord", axis=2)
        if align:  # (n + 1) / 2 · (length − 1), as onnxruntime computes it
            coord = b.op("Mul", [b.op("Div", [b.op("Add", [comp, b.const(1.0)]), b.const(2.0)]), b.const(float(n - 1))])
            bounds, scales = (0.0, n - 1.0), scales + [(n - 1) / 2.0]
        else:  # ((n + 1) · length − 1) / 2
            coord = b.op("Div", [b.op("Sub", [b.op("Mul", [b.op("Add", [comp, b.const(1.0)]), b.const(float(n))]),
                                              b.const(1.0)]), b.const(2.0)])
            bounds, scales = (-0.5, n - 0.5), scales + [n / 2.0]
        taps.append(axis_taps(b, coord, n, mode, padding, bounds))
    idx, w, dws = combine_taps(b, taps, xs[2:])  # [N, P, T]
    R = b.op("Reshape", [grads[0], b.ints([-1, C, P])], "R")
    out = {}
    if carries_signal(b, x):
        lead_idx, lead_w = (b.op("Unsqueeze", [t, b.ints([1])]) for t in (idx, w))
        out[x] = b.reshape(scatter_taps(b, R, lead_idx, lead_w, [C], size), xs, "sampled_T")
    if carries_signal(b, grid):
        if mode == "nearest":  # piecewise constant in the grid
            out[grid] = b.zeros_like_batch(grads[0], gs)
            return out
        xv = values_at(b, b.op("Reshape", [b.fwd(x), b.ints([0, C, size])]), b.op("Unsqueeze", [idx, b.ints([1])]), [C])
        xv = b.op("Reshape", [xv, b.ints([0, C, P, -1])], "tap_values")
        S = b.op("ReduceSum", [b.op("Mul", [b.op("Unsqueeze", [R, b.ints([-1])]), xv]), b.ints([1])], "S", keepdims=0)
        parts = []
        for comp in range(r):
            axis = r - 1 - comp
            ga = b.op("ReduceSum", [b.op("Mul", [S, dws[axis]]), b.ints([2])], "d_coord", keepdims=1)
            parts.append(b.op("Mul", [ga, b.const(scales[axis])], "d_grid"))
        g = parts[0] if r == 1 else b.op("Concat", parts, "d_grid", axis=2)
        out[grid] = b.reshape(g, gs, "grid_T")
    return out


@register("AffineGrid", values=(1,))
def _affine_grid(b: Builder, node, a, grads) -> dict:
    """grid = θ · [x, y, (z,) 1] at every base position: dθ = Rᵀ · base, a batched MatMul."""
    theta = node.input[0]
    size = b.value(node.input[1])
    if size is None:
        raise unsupported(node, "with a size computed from the input's values is not supported")
    spatial = [int(s) for s in size.reshape(-1)[2:]]
    align = int(a.get("align_corners", 0))
    axes = [np.linspace(-1.0, 1.0, n) if align and n > 1 else
            np.zeros(1) if align else (2.0 * np.arange(n) + 1.0) / n - 1.0 for n in spatial]
    mesh = np.meshgrid(*axes, indexing="ij")
    base = np.stack([m.reshape(-1) for m in reversed(mesh)] + [np.ones(int(np.prod(spatial)))], axis=1)
    r = len(spatial)
    R = b.op("Transpose", [b.op("Reshape", [grads[0], b.ints([-1, int(np.prod(spatial)), r])])], "R_T", perm=[0, 2, 1])
    return {theta: b.op("MatMul", [R, b.const(base, "base")], "theta_T")}


@register("DeformConv")
def _deform_conv(b: Builder, node, a, grads) -> dict:
    """Y = W ⊛ (mask · X sampled bilinearly at the kernel taps moved by the offsets) + B: the
    columns' signal is Wᵀ·R per group, scattered back to X's taps; the offsets get the taps'
    weight derivatives times X there, the mask the sampled values."""
    x, w, off = node.input[:3]
    bias = node.input[3] if len(node.input) > 3 else ""
    mask = node.input[4] if len(node.input) > 4 and node.input[4] else ""
    if carries_signal(b, w) or carries_signal(b, bias):
        raise unsupported(node, "has a weight or bias computed from the input; not supported")
    xs, ws, ys = shape_of(b, x), shape_of(b, w), shape_of(b, node.output[0])
    if len(xs) != 4:
        raise unsupported(node, "on other than 2-D images is not supported")
    (C, H, W), (oC, Cg), (oH, oW) = xs[1:], ws[:2], ys[2:]
    kh, kw = a.get("kernel_shape", ws[2:])
    G, OG = int(a.get("group", 1)), int(a.get("offset_group", 1))
    sh, sw = a.get("strides", [1, 1])
    dh, dw = a.get("dilations", [1, 1])
    ph, pw = a.get("pads", [0, 0, 0, 0])[:2]
    kk, P, Cog = kh * kw, oH * oW, C // OG
    i, j, oy, ox = np.meshgrid(np.arange(kh), np.arange(kw), np.arange(oH), np.arange(oW), indexing="ij")
    base = [(oy * sh - ph + i * dh).reshape(1, 1, kk * P, 1), (ox * sw - pw + j * dw).reshape(1, 1, kk * P, 1)]
    O = b.op("Reshape", [b.fwd(off), b.ints([0, OG, kk, 2, P])], "offsets")
    taps = []
    for axis, n in enumerate((H, W)):
        o = b.op("Reshape", [b.op("Gather", [O, b.ints(axis)], "offset", axis=3), b.ints([0, OG, kk * P, 1])])
        coord = b.op("Add", [o, b.const(base[axis].astype(np.float32))], "tap_at")
        taps.append(axis_taps(b, coord, n, "linear", "zeros", (0.0, n - 1.0)))
    idx, tw, dws = combine_taps(b, taps, (H, W), lead=3)  # [N, OG, kk·P, 4]
    idx1, tw1 = (b.op("Unsqueeze", [t, b.ints([2])]) for t in (idx, tw))  # [N, OG, 1, kk·P, 4]
    Wt = b.op("Transpose", [b.op("Reshape", [b.fwd(w), b.ints([G, oC // G, Cg * kk])])], "W_T", perm=[0, 2, 1])
    Rg = b.op("Reshape", [grads[0], b.ints([-1, G, oC // G, P])], "R_groups")
    dcol = b.op("Reshape", [b.op("MatMul", [Wt, Rg], "columns_T"), b.ints([-1, OG, Cog, kk * P])], "columns_T")
    mk = b.op("Reshape", [b.fwd(mask), b.ints([0, OG, 1, kk * P])], "mask") if mask else None
    dval = b.op("Mul", [dcol, mk], "masked_T") if mk else dcol
    out = {}
    if carries_signal(b, x):
        out[x] = b.reshape(scatter_taps(b, dval, idx1, tw1, [OG, Cog], H * W), xs, "deform_T")
    if not (carries_signal(b, off) or carries_signal(b, mask)):
        return out
    xv = values_at(b, b.op("Reshape", [b.fwd(x), b.ints([0, OG, Cog, H * W])]), idx1, [OG, Cog])
    xv = b.op("Reshape", [xv, b.ints([0, OG, Cog, kk * P, 4])], "tap_values")
    if carries_signal(b, mask):
        val = b.op("ReduceSum", [b.op("Mul", [xv, tw1]), b.ints([-1])], "sampled", keepdims=0)
        dm = b.op("ReduceSum", [b.op("Mul", [dcol, val]), b.ints([2])], "mask_T", keepdims=0)
        out[mask] = b.op("Reshape", [dm, b.ints([-1, OG * kk, oH, oW])], "mask_T")
    if carries_signal(b, off):
        S = b.op("ReduceSum", [b.op("Mul", [b.op("Unsqueeze", [dval, b.ints([-1])]), xv]), b.ints([2])], "S", keepdims=0)
        parts = [b.op("ReduceSum", [b.op("Mul", [S, d]), b.ints([-1])], "d_offset", keepdims=1) for d in dws]
        d = b.op("Reshape", [b.op("Concat", parts, "d_offset", axis=-1), b.ints([-1, OG, kk, P, 2])])
        d = b.op("Transpose", [d], "d_offset", perm=[0, 1, 2, 4, 3])
        out[off] = b.op("Reshape", [d, b.ints([-1, OG * 2 * kk, oH, oW])], "offset_T")
    return out
