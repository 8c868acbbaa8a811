"""Cost rules for the rest of the ONNX standard domain: signal processing, attention, sampling,
region pooling, losses, random generators, normalisations without a rule in ``rules.py``. The
per-element conventions are README's ("What the numbers mean")."""

from __future__ import annotations

import math

import numpy as np

from cnncli.costs.base import (
    COSTS, UNKNOWN, Cost, NodeView, Slots, conv_macs, opset, per_in, per_out, set_slots, zero,
)
from cnncli.frontend.graph import numel

# ops whose cost depends on the values of an input, not on shapes: costed when those values are
# constants the model holds, else unknown (input slot read, for the warning)
VALUE_DEPENDENT = {"MaxRoiPool": 1, "RoiAlign": 1}


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _int_input(v: NodeView, i: int) -> int | None:
    value = v.const_value(i)
    return None if value is None or value.size != 1 else int(value.reshape(-1)[0])


@COSTS.register("DFT")
def _dft(v: NodeView) -> Cost:
    """Direct DFT: each real or imaginary output value is a dot product over the transformed
    axis, of its length (after padding or cropping to dft_length) times 1 (real input) or 2
    (complex input) MACs. An axis or dft_length given as data: read from the shapes when they
    tell it (every axis it could be has the same length)."""
    x, y = v.shape(0), v.outs[0]
    if x is None or y is None or None in y or len(y) != len(x):
        return UNKNOWN
    if opset(v) >= 20:
        axis = (_int_input(v, 2) if v.has(2) else -2)
    else:
        axis = v.attrs.get("axis", 1)
    axes = range(1, len(x) - 1) if axis is None else [_axis(axis, len(x))]  # never the batch axis
    onesided = v.attrs.get("onesided", 0)
    length = _int_input(v, 1) if v.has(1) else None
    lengths = set()
    for a in axes:
        if not 0 <= a < len(x) - 1:
            return UNKNOWN
        if length is not None:
            lengths.add(min(x[a], length))
        elif not v.has(1):
            lengths.add(x[a])
        else:  # dft_length from the output: onesided keeps length//2 + 1 bins
            lengths.add(min(x[a], 2 * y[a] - 1 if onesided else y[a]))
    if len(lengths) != 1:
        return UNKNOWN
    return Cost(numel(y) * lengths.pop() * x[-1], 0)


@COSTS.register("STFT")
def _stft(v: NodeView) -> Cost:
    """A DFT of each frame (as DFT), plus one multiply per windowed sample."""
    x, out = v.shape(0), v.outs[0]
    if x is None or out is None or None in out or len(out) != 4:
        return UNKNOWN
    frame = _int_input(v, 3) if v.has(3) else None
    if frame is None and v.has(2) and v.shape(2):
        frame = v.shape(2)[0]
    if frame is None:
        return UNKNOWN
    windowed = out[0] * out[1] * frame * x[-1] if v.has(2) else 0
    return Cost(numel(out) * frame * x[-1], windowed)


@COSTS.register("Attention")
def _attention(v: NodeView) -> Cost:
    """Q·Kᵀ and the weights·V: B·heads·S·L·(dk + dv) MACs; the scale, softmax (3) and mask add
    per score as other FLOPs."""
    q, k, val = v.shape(0), v.shape(1), v.shape(2)
    if q is None or k is None or val is None or len(q) != len(k) or len(q) not in (3, 4):
        return UNKNOWN
    if len(q) == 4:
        heads, dk, dv = q[1], q[3], val[3]
    else:
        heads, kv_heads = v.attrs.get("q_num_heads", 0), v.attrs.get("kv_num_heads", 0)
        if not heads or not kv_heads:
            return UNKNOWN
        dk, dv = q[2] // heads, val[2] // kv_heads
    past = v.shape(4) if v.has(4) else None
    length = k[-2] + (past[-2] if past else 0)
    scores = q[0] * heads * q[-2] * length
    return Cost(scores * (dk + dv), scores * (4 + (1 if v.has(3) else 0)))


@COSTS.register("LinearAttention")
def _linear_attention(v: NodeView) -> Cost:
    """Per token and head: the state update k⊗v (dk·dv MACs; twice for the delta rule) and the
    read-out q·state (dk·dv MACs)."""
    q, k, val = v.shape(0), v.shape(1), v.shape(2)
    if q is None or k is None or val is None or len(q) != len(k) or len(q) not in (3, 4):
        return UNKNOWN
    if len(q) == 4:
        heads, kv_heads, dk, dv, tokens = q[1], k[1], q[3], val[3], q[0] * q[2]
    else:
        heads, kv_heads = v.attrs.get("q_num_heads", 0), v.attrs.get("kv_num_heads", 0)
        if not heads or not kv_heads:
            return UNKNOWN
        dk, dv, tokens = q[2] // heads, val[2] // kv_heads, q[0] * q[1]
    updates = 2 if v.attrs.get("update_rule", "") in ("delta", "gated_delta") else 1
    return Cost(tokens * dk * dv * (heads + updates * kv_heads), 0)


@COSTS.register("CausalConvWithState")
def _causal_conv(v: NodeView) -> Cost:
    macs = conv_macs(v)
    if macs is None:
        return UNKNOWN
    y = v.out_numel()
    act = v.attrs.get("activation", "none")
    return Cost(macs, y * ((1 if v.has(2) else 0) + (0 if act in ("none", "") else 1)))


@COSTS.register("DeformConv")
def _deform_conv(v: NodeView) -> Cost:
    """Conv's MACs; per sampled input value (N·Cin·kh·kw·Hout·Wout of them) a four-neighbour
    bilinear blend (4) and the mask multiply (1, when given); the bias add (1 per output)."""
    macs, x, w = conv_macs(v), v.shape(0), v.shape(1)
    if macs is None or x is None or w is None or not w[0]:
        return UNKNOWN
    y = v.out_numel()
    samples = y // w[0] * x[1] * math.prod(w[2:])
    return Cost(macs, samples * (4 + (1 if v.has(4) else 0)) + (y if v.has(3) else 0))


@COSTS.register("GridSample")
def _grid_sample(v: NodeView) -> Cost:
    """As Resize: per output element 2^r (linear) or 4^r (cubic) over r spatial axes, 0 (nearest)."""
    y, x = v.outs[0], v.ins[0]
    n = numel(y)
    if n is None or x is None:
        return UNKNOWN
    mode = v.attrs.get("mode", "linear")
    r = len(x) - 2
    per = {"nearest": 0, "cubic": 4**r, "bicubic": 4**r}.get(mode, 2**r)
    return Cost(0, per * n)


@COSTS.register("AffineGrid")
def _affine_grid(v: NodeView) -> Cost:
    """Each grid coordinate is a row of theta times (x, y[, z], 1): theta's row length in MACs."""
    theta, y = v.shape(0), v.out_numel()
    return UNKNOWN if theta is None or y is None else Cost(y * theta[-1], 0)


@COSTS.register("Det")
def _det(v: NodeView) -> Cost:
    """LU elimination per n×n matrix: (n−1)·n·(2n−1)/6 MACs, n(n−1)/2 divisions and the n−1
    multiplies of the diagonal."""
    x = v.shape(0)
    if x is None or len(x) < 2:
        return UNKNOWN
    n, batch = x[-1], math.prod(x[:-2])
    return Cost(batch * (n - 1) * n * (2 * n - 1) // 6, batch * (n * (n - 1) // 2 + max(n - 1, 0)))


@COSTS.register("NonMaxSuppression")
def _nms(v: NodeView) -> Cost:
    """The worst case (no box suppressed early): every pair of the n boxes of a batch and class
    compared once, 12 FLOPs an IoU and its threshold test."""
    scores = v.shape(1)
    if scores is None or len(scores) != 3:
        return UNKNOWN
    b, c, n = scores
    return Cost(0, b * c * n * (n - 1) // 2 * 12)


@COSTS.register("NegativeLogLikelihoodLoss")
def _nll(v: NodeView) -> Cost:
    n = v.in_numel(1)
    return UNKNOWN if n is None else Cost(0, 2 * n)  # per target: the weighted pick, the reduction


@COSTS.register("SoftmaxCrossEntropyLoss")
def _softmax_cross_entropy(v: NodeView) -> Cost:
    scores, labels = v.in_numel(0), v.in_numel(1)
    return UNKNOWN if scores is None or labels is None else Cost(0, 4 * scores + 2 * labels)


@COSTS.register("Multinomial")
def _multinomial(v: NodeView) -> Cost:
    x, y = v.shape(0), v.out_numel()
    return UNKNOWN if x is None or y is None else Cost(0, y * x[-1])  # a search over the classes


@COSTS.register("RotaryEmbedding")
def _rotary(v: NodeView) -> Cost:
    """x·cos + rotate(x)·sin: 3 per rotated element."""
    x, y = v.shape(0), v.out_numel()
    if x is None or y is None:
        return UNKNOWN
    if len(x) == 4:
        head = x[3]
    else:
        heads = v.attrs.get("num_heads", 0)
        if not heads:
            return UNKNOWN
        head = x[-1] // heads
    rotated = v.attrs.get("rotary_embedding_dim", 0) or head
    return Cost(0, 3 * y * rotated // head if head else 0)


def _rois(v: NodeView, width: int):
    """The regions (x1, y1, x2, y2) times spatial_scale, when ``rois`` is a constant."""
    rois = v.const_value(1)
    if rois is None or rois.ndim != 2 or rois.shape[1] != width:
        return None
    return np.asarray(rois[:, width - 4:], dtype=np.float64) * float(v.attrs.get("spatial_scale", 1.0))


@COSTS.register("MaxRoiPool")
def _max_roi_pool(v: NodeView) -> Cost:
    """One comparison per input value in each region (per channel): the regions' sizes are the
    values of ``rois``."""
    x = v.shape(0)
    rois = _rois(v, 5)  # (batch index, x1, y1, x2, y2)
    if x is None or rois is None:
        return UNKNOWN
    r = np.round(rois)
    area = np.maximum(r[:, 3] - r[:, 1] + 1, 1) * np.maximum(r[:, 2] - r[:, 0] + 1, 1)
    return Cost(0, int(x[1] * area.sum()))


@COSTS.register("RoiAlign")
def _roi_align(v: NodeView) -> Cost:
    """5 per sample point (four-neighbour blend, then sum or max); sampling_ratio² points per
    output element, or, when it is 0 (adaptive), ⌈roi_h/out_h⌉·⌈roi_w/out_w⌉ from ``rois``."""
    y = v.outs[0]
    if y is None or None in y or len(y) != 4:
        return UNKNOWN
    ratio = int(v.attrs.get("sampling_ratio", 0))
    if ratio > 0:
        return Cost(0, 5 * numel(y) * ratio * ratio)
    rois = _rois(v, 4)
    if rois is None or len(rois) != y[0]:
        return UNKNOWN
    mode = v.attrs.get("coordinate_transformation_mode", "half_pixel")
    floor = 0.0 if mode == "half_pixel" else 1.0
    h = np.maximum(rois[:, 3] - rois[:, 1], floor)
    w = np.maximum(rois[:, 2] - rois[:, 0], floor)
    grid = np.ceil(h / y[2]) * np.ceil(w / y[3])
    return Cost(0, int(5 * y[1] * y[2] * y[3] * grid.sum()))


for _ops, _rule in (
    (("BitwiseNot", "Bernoulli", "RandomNormalLike", "RandomUniformLike", "CumSum", "CumProd",
      "RandomNormal", "RandomUniform", "HannWindow", "HammingWindow", "BlackmanWindow", "MelWeightMatrix"),
     per_out(1)),
    (("BitwiseAnd", "BitwiseOr", "BitwiseXor"), per_out(1)),
    (("SwiGLU",), per_out(2)),  # Swish(A), times B
    (("LpNormalization", "RMSNormalization"), per_out(3)),
    (("MeanVarianceNormalization",), per_out(4)),
    (("DynamicQuantizeLinear",), per_in(3)),  # min and max of the input, then quantize each
    (("Col2Im", "Unique"), per_in(1)),  # one add per patch value; a sort
    (("BitCast", "CenterCropPad", "MaxUnpool", "ReverseSequence", "Scatter", "TensorScatter"), zero),
):
    COSTS.register(*_ops)(_rule)

set_slots(COSTS, ("DeformConv",), Slots(weight=(1,), extra=(3,)))
set_slots(COSTS, ("CausalConvWithState",), Slots(weight=(1,), extra=(2,)))
set_slots(COSTS, ("RMSNormalization",), Slots(extra=(1,)))
