"""Reverse-test cases (reverse_models.Case) for the ops issue 16 added last: transformer blocks
(RotaryEmbedding, Attention with grouped kv heads, past key/value, a mask, causal, softcap and
scale; LinearAttention; CausalConvWithState), the losses, the KV-cache write and the other copies
(TensorScatter, Scatter, Unique), the spectral transforms (DFT, STFT), and the sampling and region
ops (GridSample, AffineGrid, DeformConv, Col2Im, MaxUnpool, RoiAlign, MaxRoiPool; their one-node
checks are tests/test_reverse_sampling.py). test_reverse_fd.py checks each against finite
differences, beside reverse_models.CASES.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from reverse_models import Case, Net

# ops with a reverse rule that no case can hold, and why
UNRUNNABLE = {"SwiGLU": "onnxruntime 1.32 cannot run it (its body's Swish-24 has no kernel); tests/test_reverse_llm.py"}


def attention_block() -> Case:
    """x [1, 6, 8] → q, k, v projections; RotaryEmbedding on q (2 heads, position ids); Attention
    with 2 query heads sharing 1 kv head, 2 past positions, a float mask, causal, softcap 4 and
    scale 0.4 (opset 23); the output's hidden axis as channels."""
    n = Net((1, 6, 8), seed=51, opset=23)
    q = n.op("MatMul", ["x", n.randn((8, 8), 0.5)])
    k = n.op("MatMul", ["x", n.randn((8, 4), 0.5)])
    v = n.op("MatMul", ["x", n.randn((8, 4), 0.5)])
    angles = np.arange(10)[:, None] * np.array([1.0, 0.1])[None, :]
    q = n.op("RotaryEmbedding", [q, n.const(np.cos(angles)), n.const(np.sin(angles)), n.ints([[2, 3, 4, 5, 6, 7]])],
             num_heads=2)
    mask = n.const(n.rng.uniform(-1, 0, (6, 8)))
    y = n.op("Attention", [q, k, v, mask, n.randn((1, 1, 2, 4)), n.randn((1, 1, 2, 4))], n_out=3,
             q_num_heads=2, kv_num_heads=1, is_causal=1, softcap=4.0, scale=0.4)[0]
    return n.case("attention_block", n.op("Transpose", [y], perm=[0, 2, 1]), [0, 5])


def recurrent_mixers() -> Case:
    """x [1, 4, 8] (channels, time) → CausalConvWithState (silu, bias, a past state) → per-step
    q, k, v and β → LinearAttention (delta rule, 2 heads; opset 27), back to [1, 4, 8]."""
    n = Net((1, 4, 8), seed=52, opset=27)
    t = n.op("CausalConvWithState", ["x", n.randn((4, 1, 3), 0.6), n.randn((4,), 0.1), n.randn((1, 4, 2))],
             n_out=2, activation="silu")[0]
    t = n.op("Transpose", [t], perm=[0, 2, 1])                                             # [1, 8, 4]
    q, k, v = (n.op("MatMul", [t, n.randn((4, 4), 0.5)]) for _ in range(3))
    beta = n.op("Sigmoid", [n.op("MatMul", [t, n.randn((4, 2), 0.5)])])                   # [1, 8, 2]
    y = n.op("LinearAttention", [q, k, v, "", "", beta], n_out=2, q_num_heads=2, kv_num_heads=2,
             update_rule="delta")[0]
    return n.case("recurrent_mixers", n.op("Transpose", [y], perm=[0, 2, 1]), [0, 3])


def losses() -> Case:
    """SoftmaxCrossEntropyLoss (weights, an ignored label; its loss and its log_prob output both
    used) and NegativeLogLikelihoodLoss, reduction none (opset 22)."""
    n = Net((1, 5, 4), seed=53, opset=22)
    logits = n.op("Add", [n.op("Mul", ["x", n.randn((5, 1), 1.0)]), n.randn((5, 4), 0.3)])
    labels = n.ints([[0, 3, 4, 1]])
    loss, log_prob = n.op("SoftmaxCrossEntropyLoss", [logits, labels, n.const(n.rng.uniform(0.5, 2, 5))], n_out=2,
                          reduction="none", ignore_index=3)
    nll = n.op("NegativeLogLikelihoodLoss", [n.op("Mul", [log_prob, n.op("Sigmoid", ["x"])]), labels], reduction="none")
    axis = n.ints([1])
    t = n.op("Concat", [n.op("Unsqueeze", [loss, axis]), n.op("Unsqueeze", [nll, axis]), log_prob], axis=1)  # [1, 7, 4]
    return n.case("losses", t, [0, 1, 4])


def cache_copies() -> Case:
    """TensorScatter (a 2-step update written at index 3 of a 6-step cache, opset 24), Unique of
    the cache's slices twice over (sorted; its length declared), then a one-sided DFT along time."""
    n = Net((1, 3, 5), seed=54, opset=24)
    past = n.op("Transpose", [n.op("MatMul", ["x", n.randn((5, 6), 0.5)])], perm=[0, 2, 1])  # [1, 6, 3]
    update = n.op("Transpose", [n.op("MatMul", ["x", n.randn((5, 2), 0.5)])], perm=[0, 2, 1])  # [1, 2, 3]
    cache = n.op("TensorScatter", [past, update, n.ints([3])], axis=1)
    twice = n.op("Concat", [cache, cache], axis=2)                                           # [1, 6, 6]
    uniq = n.op("Unique", [twice], n_out=4, axis=2)[0]                                       # [1, 6, 3]
    spec = n.op("DFT", [n.op("Unsqueeze", [uniq, n.ints([3])]), "", n.ints(1)], onesided=1)   # [1, 4, 3, 2]
    case = n.case("cache_copies", spec, [0, 3])
    case.model.graph.value_info.append(helper.make_tensor_value_info(uniq, TensorProto.FLOAT, [1, 6, 3]))
    return case


def scatter_opset10() -> Case:
    """The deprecated Scatter (opset 10): updates from the input written into a product of it."""
    n = Net((1, 3, 6), seed=55, opset=10)
    data = n.op("Mul", ["x", n.randn((3, 6), 1.0)])
    upd = n.op("Gather", [n.op("MatMul", ["x", n.randn((6, 6), 0.5)]), n.ints([0, 2])], axis=1)   # [1, 2, 6]
    t = n.op("Scatter", [data, n.ints([[[2, 0, 1, 2, 0, 1], [0, 1, 2, 1, 2, 0]]]), upd], axis=1)
    return n.case("scatter_opset10", t, [0, 2])


def spectrogram() -> Case:
    """STFT of a signal made from the input (frame 8, step 4, a Hann window), opset 17."""
    n = Net((1, 2, 16), seed=56)
    sig = n.op("Reshape", [n.op("Mul", ["x", n.randn((2, 16), 1.0)]), n.ints([1, 32, 1])])
    t = n.op("STFT", [sig, n.ints(4), n.const(np.hanning(10)[1:-1]), n.ints(8)])                # [1, 7, 5, 2]
    return n.case("spectrogram", t, [0, 6])


def sampling_model(nodes, inits, opset=20):
    """x [1, 2, 6, 6] through ``nodes`` to y; ``inits`` (name → array) stored."""
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _uniform(rng, shape, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, shape).astype(np.float32)


def stn_model(mode="linear", padding="border"):
    """θ computed from the image (pooled, a Gemm) → AffineGrid → GridSample of the same image: the
    signal reaches x through the sampled values and through the grid (a spatial transformer)."""
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "Wt", "Bt"], ["t6"]),
             helper.make_node("Reshape", ["t6", "shape"], ["theta"]),
             helper.make_node("AffineGrid", ["theta", "size"], ["grid"], align_corners=0),
             helper.make_node("GridSample", ["x", "grid"], ["y"], mode=mode, padding_mode=padding)]
    inits = {"Wt": _uniform(rng, (2, 6), -0.5, 0.5), "Bt": np.asarray([0.9, 0.1, 0.05, -0.1, 0.8, 0.02], np.float32),
             "shape": np.asarray([1, 2, 3], np.int64), "size": np.asarray([1, 2, 5, 4], np.int64)}
    return sampling_model(nodes, inits)


def dcn_model():
    """A DCN block: offsets and mask computed by convs of the image, then DeformConv of it."""
    rng = np.random.default_rng(7)
    nodes = [helper.make_node("Conv", ["x", "Wo"], ["offset"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "Wm"], ["m"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["m"], ["mask"]),
             helper.make_node("DeformConv", ["x", "W", "offset", "", "mask"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    inits = {"Wo": _uniform(rng, (18, 2, 3, 3), -0.5, 0.5), "Wm": _uniform(rng, (9, 2, 3, 3)), "W": _uniform(rng, (3, 2, 3, 3))}
    return sampling_model(nodes, inits, opset=19)


def spatial_transformer() -> Case:
    """stn_model (bilinear, border): AffineGrid and GridSample, the signal through the grid too."""
    return Case("spatial_transformer", stn_model(), "y", (1, 2, 6, 6), [0, 1])


def deformable_conv() -> Case:
    """dcn_model: DeformConv with offsets and mask computed from the image."""
    return Case("deformable_conv", dcn_model(), "y", (1, 2, 6, 6), [0, 2])


def regions() -> Case:
    """x [1, 2, 6, 6] → MaxPool 2x2 with indices → MaxUnpool of the pooled values times a weight,
    plus x·w → RoiAlign (avg, one box) and MaxRoiPool (one box) of it, 4x4 each; beside them
    Col2Im of x read as 2x2 blocks of a 4x4 image; the three concatenated: [1, 6, 4, 4] (opset 18)."""
    n = Net((1, 2, 6, 6), seed=57, opset=18)
    pooled, idx = n.op("MaxPool", ["x"], n_out=2, kernel_shape=[2, 2], strides=[2, 2])
    un = n.op("MaxUnpool", [n.op("Mul", [pooled, n.randn((2, 1, 1), 1.0)]), idx], kernel_shape=[2, 2], strides=[2, 2])
    s = n.op("Add", [un, n.op("Mul", ["x", n.randn((2, 1, 1), 0.5)])])
    align = n.op("RoiAlign", [s, n.const([[0.7, 0.4, 5.2, 4.9]]), n.ints([0])], mode="avg", output_height=4,
                 output_width=4, sampling_ratio=2)
    roipool = n.op("MaxRoiPool", [s, n.const([[0, 0.6, 1.2, 5.5, 4.4]])], pooled_shape=[4, 4])
    folded = n.op("Col2Im", [n.op("Reshape", ["x", n.ints([1, 8, 9])]), n.ints([4, 4]), n.ints([2, 2])])
    return n.case("regions", n.op("Concat", [align, roipool, folded], axis=1), [0, 3, 5])


def computed_scales() -> Case:
    """DequantizeLinear with its scale on the signal's path: a per-channel scale (with zero points)
    and a per-tensor one, each computed from the pooled input (Reshape drops the batch axis), the
    integer codes stored; plus x·w so every input position matters (opset 21)."""
    n = Net((1, 3, 4, 4), seed=58, opset=21)
    pooled = n.op("GlobalAveragePool", ["x"])                                                     # [1, 3, 1, 1]
    per_channel = n.op("Sigmoid", [n.op("Reshape", [pooled, n.ints([3])])])                       # [3]
    per_tensor = n.op("Exp", [n.op("Reshape", [n.op("ReduceMean", [pooled], keepdims=1), n.ints([])])])  # []
    codes = n.const(n.rng.integers(-100, 100, (1, 3, 4, 4)), np.int8)
    a = n.op("DequantizeLinear", [codes, per_channel, n.const([3, -5, 0], np.int8)], axis=1)
    b = n.op("DequantizeLinear", [codes, per_tensor])
    t = n.op("Add", [n.op("Mul", [a, b]), n.op("Mul", ["x", n.randn((3, 1, 1), 1.0)])])
    return n.case("computed_scales", t, [0, 2])


CASES = {f.__name__: f for f in (attention_block, recurrent_mixers, losses, cache_copies, scatter_opset10, spectrogram,
                                 spatial_transformer, deformable_conv, regions, computed_scales)}
