"""Normalization: BatchNormalization (inference), LRN, Layer/Instance/Group normalization (their exact
Jacobianᵀ at the forward point) and LpNormalization."""

from __future__ import annotations

import numpy as np

from cnncli.reverse.builder import Builder, carries_signal, shape_of, unsupported
from cnncli.reverse.rules import register


@register("BatchNormalization")
def _batchnorm(b: Builder, node, a, grads) -> dict:
    if int(a.get("training_mode", 0)):  # normalises by the batch's own statistics: not the inference form
        raise unsupported(node, "in training mode (training_mode=1) is not supported")
    x = node.input[0]
    rank = len(shape_of(b, x))
    scale, var = b.fwd(node.input[1]), b.fwd(node.input[4])
    k = b.op("Div", [scale, b.op("Sqrt", [b.op("Add", [var, b.const(float(a.get("epsilon", 1e-5)))])])], "bn_k")
    k = b.op("Reshape", [k, b.ints([1, -1] + [1] * (rank - 2))], "bn_k")
    return {x: b.op("Mul", [grads[0], k], "bn_T")}


@register("LRN")
def _lrn(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    if b.mode != "backprop":
        return {x: grads[0]}  # skipped in deconvnet and guided, as in the paper
    # y_i = x_i · D_i^−β, D_i = bias + α/n · Σ_{j∈W(i)} x_j²
    # dx_j = R_j·D_j^−β − (2αβ/n) · x_j · Σ_{i: j∈W(i)} R_i·x_i·D_i^(−β−1)
    n = int(a["size"])
    alpha, beta, bias = float(a.get("alpha", 1e-4)), float(a.get("beta", 0.75)), float(a.get("bias", 1.0))
    xs = shape_of(b, x)
    before, after = (n - 1) // 2, n - 1 - (n - 1) // 2
    xf = b.fwd(x)
    sq = b.op("Mul", [xf, xf], "sq")
    D = b.op("Add", [b.op("Mul", [_channel_window_sum(b, sq, xs, before, after), b.const(alpha / n)]), b.const(bias)], "D")
    Dmb = b.op("Pow", [D, b.const(-beta)], "D_mb")
    term1 = b.op("Mul", [grads[0], Dmb], "t1")
    inner = b.op("Mul", [b.op("Mul", [grads[0], xf]), b.op("Div", [Dmb, D])], "inner")
    back = _channel_window_sum(b, inner, xs, after, before)  # the transposed (mirrored) window
    term2 = b.op("Mul", [b.op("Mul", [xf, back]), b.const(2 * alpha * beta / n)], "t2")
    return {x: b.op("Sub", [term1, term2], "lrn_T")}


def _channel_window_sum(b: Builder, t: str, xs, before: int, after: int) -> str:
    """Σ over channels c−before … c+after, zero outside, as a pooled sum along the channel axis."""
    c = xs[1]
    spatial = int(np.prod(xs[2:]))
    t4 = b.op("Reshape", [t, b.ints([-1, 1, c, spatial])], "chan")
    k = before + after + 1
    pooled = b.op(
        "AveragePool", [t4], "chan_sum", kernel_shape=[k, 1], pads=[before, 0, after, 0], count_include_pad=1
    )
    pooled = b.op("Mul", [pooled, b.const(float(k))], "chan_sum")
    return b.reshape(pooled, xs, "chan_back")


@register("LayerNormalization")
def _layer_norm(b: Builder, node, a, grads) -> dict:
    """The exact Jacobianᵀ at the forward point, in every mode (a normalisation, not a rectifier)."""
    if any(g is not None for g in grads[1:]):
        raise unsupported(node, "with a signal through its Mean or InvStdDev output is not supported")
    x = node.input[0]
    _constant_affine(b, node)
    xs = shape_of(b, x)
    axis = int(a.get("axis", -1)) % len(xs)
    # over the batch axis too: with a batch of 1 that is each row's own normalisation; with more,
    # one signal shaped as the output
    axes = list(range(max(axis, 1) if xs[0] == 1 else axis, len(xs)))
    g = b.op("Mul", [grads[0], b.fwd(node.input[1])], "ln_g")
    return {x: normalized_T(b, b.fwd(x), g, axes, float(a.get("epsilon", 1e-5)))}


def _constant_affine(b: Builder, node) -> None:
    if any(carries_signal(b, n) for n in node.input[1:]):
        raise unsupported(node, "with a scale or bias computed from the input is not supported")


def normalized_T(b: Builder, xf: str, g: str, axes: list[int], eps: float) -> str:
    """The adjoint of x ↦ x̂ = (x − μ)/σ over ``axes`` (σ = √(var + ε)) at the forward ``xf``,
    applied to ``g`` (the signal already times the scale γ): dx = (g − mean(g) − x̂·mean(g·x̂)) / σ."""

    def mean(t: str, hint: str) -> str:
        return b.op("ReduceMean", [t], hint, axes=axes, keepdims=1)  # opset 17: axes as an attribute

    xc = b.op("Sub", [xf, mean(xf, "ln_mean")], "ln_centred")
    var = mean(b.op("Mul", [xc, xc]), "ln_var")
    inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, b.const(eps)])])], "ln_inv")
    xhat = b.op("Mul", [xc, inv], "ln_xhat")
    centred_g = b.op("Sub", [g, mean(g, "ln_mg")])
    proj = b.op("Mul", [xhat, mean(b.op("Mul", [g, xhat]), "ln_mgx")])
    return b.op("Mul", [b.op("Sub", [centred_g, proj]), inv], "ln_T")


def _per_channel(b: Builder, name: str, rank: int) -> str:
    return b.op("Reshape", [b.fwd(name), b.ints([1, -1] + [1] * (rank - 2))], "per_channel")


@register("InstanceNormalization")
def _instance_norm(b: Builder, node, a, grads) -> dict:
    """Each (image, channel) plane normalised over its spatial axes, then scaled per channel."""
    x = node.input[0]
    _constant_affine(b, node)
    r = len(shape_of(b, x))
    g = b.op("Mul", [grads[0], _per_channel(b, node.input[1], r)], "in_g")
    return {x: normalized_T(b, b.fwd(x), g, list(range(2, r)), float(a.get("epsilon", 1e-5)))}


@register("GroupNormalization")
def _group_norm(b: Builder, node, a, grads) -> dict:
    """Channels in num_groups groups, each normalised over its channels and spatial axes; the scale
    is per channel (opset 21) or per group (opset 18, a scale of num_groups values)."""
    x = node.input[0]
    _constant_affine(b, node)
    xs = shape_of(b, x)
    groups = int(a["num_groups"])
    scale = shape_of(b, node.input[1])
    grouped = [xs[0], groups, int(np.prod(xs[1:])) // groups]
    if scale[0] == xs[1]:
        g = b.op("Mul", [grads[0], _per_channel(b, node.input[1], len(xs))], "gn_g")
        g = b.reshape(g, grouped, "gn_grouped")
    else:  # one scale per group
        g = b.reshape(grads[0], grouped, "gn_grouped")
        g = b.op("Mul", [g, b.op("Reshape", [b.fwd(node.input[1]), b.ints([1, groups, 1])])], "gn_g")
    xf = b.reshape(b.fwd(x), grouped, "gn_x")
    return {x: b.reshape(normalized_T(b, xf, g, [2], float(a.get("epsilon", 1e-5))), xs, "gn_T")}


@register("LpNormalization")
def _lp_norm(b: Builder, node, a, grads) -> dict:
    """y = x / ‖x‖_p along an axis. p = 2: dx = (g − y·Σ g·y) / ‖x‖; p = 1: dx = (g − sign(x)·Σ g·y) / ‖x‖₁."""
    x = node.input[0]
    xs = shape_of(b, x)
    axis = int(a.get("axis", -1)) % len(xs)
    p = int(a.get("p", 2))
    if p not in (1, 2):
        raise unsupported(node, "with p other than 1 and 2 is not supported")
    xf, y, g = b.fwd(x), b.fwd(node.output[0]), grads[0]
    if axis == 0 and xs[0] == 1:  # one value normalised: ±1 (or 0), its derivative 0
        return {x: b.op("Mul", [g, b.const(0.0)], "lp_T")}
    norm = b.op("ReduceL2" if p == 2 else "ReduceL1", [xf], "lp_norm", axes=[axis], keepdims=1)
    proj = b.op("ReduceSum", [b.op("Mul", [g, y]), b.ints([axis])], "lp_proj", keepdims=1)
    direction = y if p == 2 else b.op("Sign", [xf], "lp_sign")
    return {x: b.op("Div", [b.op("Sub", [g, b.op("Mul", [direction, proj])]), norm], "lp_T")}


def _norm_axes(xs, axes) -> list[int]:
    """Axes normalised over, without the batch axis where the batch is one (each reverse row is
    then its own copy of the one forward row)."""
    axes = sorted({int(ax) % len(xs) for ax in axes})
    return [ax for ax in axes if ax != 0] if xs[0] == 1 else axes


@register("MeanVarianceNormalization")
def _mvn(b: Builder, node, a, grads) -> dict:
    """y = (x − μ)/(σ + ε) over ``axes`` (σ the population deviation, ε = 1e−9 as onnx's function
    body): dx = (g − mean g)/(σ + ε) − (x − μ)·mean(g·(x − μ)) / ((σ + ε)²·σ)."""
    x = node.input[0]
    xs = shape_of(b, x)
    axes = _norm_axes(xs, a.get("axes", [0, 2, 3]))
    g = grads[0]
    if not axes:  # each value its own mean: y = 0
        return {x: b.op("Mul", [g, b.const(0.0)], "mvn_T")}

    def mean(t: str, hint: str) -> str:
        return b.op("ReduceMean", [t], hint, axes=axes, keepdims=1)

    xf = b.fwd(x)
    xc = b.op("Sub", [xf, mean(xf, "mvn_mean")], "mvn_centred")
    sd = b.op("Sqrt", [mean(b.op("Mul", [xc, xc]), "mvn_var")], "mvn_sd")
    s = b.op("Add", [sd, b.const(1e-9)], "mvn_s")
    first = b.op("Div", [b.op("Sub", [g, mean(g, "mvn_mg")]), s])
    second = b.op("Div", [b.op("Mul", [xc, mean(b.op("Mul", [g, xc]), "mvn_mgx")]), b.op("Mul", [b.op("Mul", [s, s]), sd])])
    return {x: b.op("Sub", [first, second], "mvn_T")}


@register("RMSNormalization")
def _rms_norm(b: Builder, node, a, grads) -> dict:
    """y = γ·x·r, r = (mean x² + ε)^−½ over the axes from ``axis`` on: dx = r·(g − x·r²·mean(g·x)),
    g = γ·R."""
    x = node.input[0]
    _constant_affine(b, node)
    xs = shape_of(b, x)
    axes = _norm_axes(xs, range(int(a.get("axis", -1)) % len(xs), len(xs)))
    xf = b.fwd(x)
    g = b.op("Mul", [grads[0], b.fwd(node.input[1])], "rms_g")

    def mean(t: str, hint: str) -> str:  # (no axes left: a batch axis of one value, its own mean)
        return b.op("ReduceMean", [t], hint, axes=axes, keepdims=1) if axes else t

    ms = mean(b.op("Mul", [xf, xf]), "rms_ms")
    r = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [ms, b.const(float(a.get("epsilon", 1e-5)))])])], "rms_r")
    proj = mean(b.op("Mul", [g, xf]), "rms_mgx")
    inner = b.op("Sub", [g, b.op("Mul", [xf, b.op("Mul", [b.op("Mul", [r, r]), proj])])])
    return {x: b.op("Mul", [r, inner], "rms_T")}
