"""Cost rules added for issue 16, on tiny graphs built with onnx.helper: recurrent layers, the rest
of the standard domain, quantized layers (standard and com.microsoft), and the learned-scalar
params rule. Every expected number is worked out by hand next to its assert.

Recurrent notation: D directions, S sequence length, N batch, G gates (LSTM 4, GRU 3, RNN 1),
H hidden, I input size. Per D·S·N row: MACs G·H·(I+H) (+3·H LSTM peepholes); other FLOPs
LSTM 9·H, GRU 8·H, RNN H, plus 2·G·H with biases and G·H with clip.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from helpers import init, make_model, out, row, stats_of, vi

# ----------------------------------------------------------------------------- recurrent layers


def _recurrent(op, x_shape, w_shape, r_shape, extra=(), opset=17, **attrs):
    """op(X, W, R, *extra) -> Y, Y_h; ``extra``: (name, shape) initializers or '' (absent)."""
    inits = [init("W", w_shape), init("R", r_shape)]
    ins = ["x", "W", "R"]
    for e in extra:
        if e:
            inits.append(init(e[0], e[1]))
            ins.append(e[0])
        else:
            ins.append("")
    node = helper.make_node(op, ins, ["y", "y_h"], name="rnn", **attrs)
    return make_model([node], [vi("x", x_shape)], [out("y"), out("y_h")], inits, opset=opset)


def test_lstm_forward_with_bias():
    # S 5, N 2, I 3, H 4: W 1x16x3, R 1x16x4, B 1x32
    r = stats_of(_recurrent("LSTM", [5, 2, 3], [1, 16, 3], [1, 16, 4], [("B", [1, 32])], hidden_size=4))
    c = row(r, "rnn")
    assert c.macs == 1 * 5 * 2 * 4 * 4 * (3 + 4)  # 1,120
    assert c.flops_other == 1 * 5 * 2 * (9 * 4 + 2 * 4 * 4)  # gating 36 + biases 32 per row: 680
    assert c.params == 16 * 3 + 16 * 4 + 32  # W, R, B: 144
    assert c.cpr == 1120 // (16 * 3 + 16 * 4)  # bias excluded: 10 = S·N
    assert r.totals["incomplete"] is False


def test_lstm_bidirectional_with_peepholes_and_clip():
    # D 2, S 5, N 2, I 3, H 4; B 2x32, no sequence_lens / initial_h / initial_c, P 2x12
    m = _recurrent("LSTM", [5, 2, 3], [2, 16, 3], [2, 16, 4], [("B", [2, 32]), "", "", "", ("P", [2, 12])],
                   hidden_size=4, direction="bidirectional", clip=3.0)
    c = row(stats_of(m), "rnn")
    assert c.macs == 2 * 5 * 2 * (4 * 4 * 7 + 3 * 4)  # 20 rows x (112 + 12 peephole) = 2,480
    assert c.flops_other == 2 * 5 * 2 * (9 * 4 + 2 * 4 * 4 + 4 * 4)  # + clip G·H: 20 x 84 = 1,680
    assert c.params == 2 * 16 * 3 + 2 * 16 * 4 + 2 * 32 + 2 * 12  # W R B P: 312


@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_gru_without_bias(linear_before_reset):
    # S 3, N 1, I 2, H 5: W 1x15x2, R 1x15x5; r⊙(h·R) or (r⊙h)·R: the same count
    m = _recurrent("GRU", [3, 1, 2], [1, 15, 2], [1, 15, 5], hidden_size=5, linear_before_reset=linear_before_reset)
    c = row(stats_of(m), "rnn")
    assert c.macs == 3 * 1 * 3 * 5 * (2 + 5)  # 315
    assert c.flops_other == 3 * 8 * 5  # 120
    assert c.params == 15 * 2 + 15 * 5  # 105


def test_rnn_batch_first_layout():
    # layout 1: X is N 2 x S 4 x I 3; H 6, B 1x12
    m = _recurrent("RNN", [2, 4, 3], [1, 6, 3], [1, 6, 6], [("B", [1, 12])], opset=14, hidden_size=6, layout=1)
    c = row(stats_of(m), "rnn")
    assert c.output_shape == [2, 4, 1, 6]
    assert c.macs == 2 * 4 * 6 * (3 + 6)  # 432
    assert c.flops_other == 2 * 4 * (6 + 2 * 6)  # tanh + Wb and Rb: 144
    assert c.params == 18 + 36 + 12


# ----------------------------------------------------------------------------- the rest of the standard domain

# ops that stay without a cost rule: sequences, optionals and strings carry no tensor arithmetic
# cnncli can count from shapes, and ImageDecoder's cost depends on the encoded bytes
NOT_COSTED = {
    "ConcatFromSequence", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert",
    "SequenceLength", "SequenceMap", "SplitToSequence", "Optional", "OptionalGetElement", "OptionalHasElement",
    "StringConcat", "StringNormalizer", "StringSplit", "RegexFullMatch", "TfIdfVectorizer", "ImageDecoder",
}


def test_every_standard_op_has_a_cost_rule_but_sequences_optionals_and_strings():
    from cnncli.costs.rules import COSTS

    standard = {s.name for s in onnx.defs.get_all_schemas_with_history() if s.domain in ("", "ai.onnx")}
    assert sorted(standard - set(COSTS)) == sorted(NOT_COSTED & standard)


def _one(op, inputs, inits=(), opset=17, outputs=("y",), **attrs):
    """op over graph inputs ``inputs`` ((name, shape[, type])), then ``inits``: initializers, or
    None for an absent optional input."""
    names = [i[0] for i in inputs] + [t.name if t is not None else "" for t in inits]
    node = helper.make_node(op, names, list(outputs), name="n", **attrs)
    ins = [vi(i[0], i[1], *i[2:]) for i in inputs]
    return make_model([node], ins, [out(o) for o in outputs], [t for t in inits if t is not None], opset=opset)


def test_deform_conv():
    # X 1x2x5x5, offset 1x18x3x3 (data), W 3x2x3x3, B 3, mask 1x9x3x3 -> Y 1x3x3x3
    m = _one("DeformConv", [("x", [1, 2, 5, 5])], [init("W", [3, 2, 3, 3]), None, init("B", [3]), None], opset=19)
    m.graph.node[0].input[2], m.graph.node[0].input[4] = "offset", "mask"
    m.graph.input.extend([vi("offset", [1, 18, 3, 3]), vi("mask", [1, 9, 3, 3])])
    c = row(stats_of(m), "n")
    assert c.output_shape == [1, 3, 3, 3]
    assert c.macs == 1 * 3 * 3 * 3 * 2 * 3 * 3  # as Conv: 486
    samples = 1 * 2 * 3 * 3 * 3 * 3  # N·Cin·kh·kw·Hout·Wout: 162
    assert c.flops_other == samples * (4 + 1) + 27  # blend 4, mask 1; bias 1 per output: 837
    assert c.params == 54 + 3


def test_det():
    # two 3x3 matrices: LU (n−1)n(2n−1)/6 = 5 MACs, n(n−1)/2 = 3 divisions, n−1 = 2 diagonal products
    c = row(stats_of(_one("Det", [("x", [2, 3, 3])])), "n")
    assert (c.macs, c.flops_other) == (2 * 5, 2 * (3 + 2))


def test_attention_four_dimensional():
    # Q 1x2x4x8, K 1x2x6x8, V 1x2x6x5: 1·2·4·6 = 48 scores, each 8 + 5 MACs; scale + softmax 3
    m = _one("Attention", [("q", [1, 2, 4, 8]), ("k", [1, 2, 6, 8]), ("v", [1, 2, 6, 5])], opset=23)
    c = row(stats_of(m), "n")
    assert (c.macs, c.flops_other) == (48 * (8 + 5), 48 * 4)


def test_einsum_with_an_ellipsis():
    # "...ii->...i" on 3x5x5: 3·5 index values, one operand -> other FLOPs
    c = row(stats_of(_one("Einsum", [("x", [3, 5, 5])], equation="...ii->...i")), "n")
    assert (c.macs, c.flops_other) == (0, 15)
    # batched matmul through an ellipsis: 2·3·4·5 MACs
    m = _one("Einsum", [("a", [2, 3, 4]), ("b", [2, 4, 5])], equation="...ij,...jk->...ik")
    assert row(stats_of(m), "n").macs == 2 * 3 * 4 * 5


def test_dft_complex_input_constant_axis():
    # opset 20, x 1x8x2 (complex), axis 1 as a constant: 16 output values, each 8 samples x 2 MACs
    m = _one("DFT", [("x", [1, 8, 2])], [None, init("axis", [], np.int64, 1)], opset=20)
    c = row(stats_of(m), "n")
    assert c.output_shape == [1, 8, 2]
    assert c.macs == 16 * 8 * 2


def test_col2im_rms_norm_and_unary_newcomers():
    # Col2Im: 1x8x4 blocks (2 channels x 2x2 kernel, 4 of them) into 3x3: one add per block value
    m = _one("Col2Im", [("x", [1, 8, 4])], [init("image", [2], np.int64, [3, 3]), init("block", [2], np.int64, [2, 2])],
             opset=18)
    c = row(stats_of(m), "n")
    assert c.output_shape == [1, 2, 3, 3] and c.flops_other == 32
    # RMSNormalization: square-sum, divide, scale: 3 per element; its scale is a param
    m = _one("RMSNormalization", [("x", [2, 3, 4])], [init("scale", [4])], opset=23)
    c = row(stats_of(m), "n")
    assert (c.flops_other, c.params) == (3 * 24, 4)
    # CumSum: 1 per output element; Swish: elementwise, 1
    m = _one("CumSum", [("x", [2, 5])], [init("axis", [], np.int64, 1)])
    assert row(stats_of(m), "n").flops_other == 10
    assert row(stats_of(_one("Swish", [("x", [2, 5])], opset=24)), "n").flops_other == 10


def test_grid_sample_bilinear():
    # X 1x1x4x4, grid 1x3x5x2 -> Y 1x1x3x5: four neighbours per output value
    c = row(stats_of(_one("GridSample", [("x", [1, 1, 4, 4]), ("g", [1, 3, 5, 2])], opset=16)), "n")
    assert c.flops_other == 15 * 4


def test_roi_align_fixed_sampling():
    # 3 regions, 2 channels, 2x3 bins, sampling_ratio 2: 36 outputs x 4 points x 5
    m = _one("RoiAlign", [("x", [1, 2, 6, 6]), ("rois", [3, 4]), ("idx", [3], TensorProto.INT64)],
             output_height=2, output_width=3, sampling_ratio=2)
    c = row(stats_of(m), "n")
    assert c.output_shape == [3, 2, 2, 3] and c.flops_other == 5 * 36 * 4


def test_max_roi_pool_reads_constant_regions_and_is_unknown_on_data():
    # regions (x1, y1, x2, y2) = (0, 0, 3, 1): 4x2 pixels, and (1, 1, 2, 2): 2x2; 2 channels
    rois = init("rois", [2, 5], value=[0, 0, 0, 3, 1, 0, 1, 1, 2, 2])
    c = row(stats_of(_one("MaxRoiPool", [("x", [1, 2, 6, 6])], [rois], pooled_shape=[2, 2])), "n")
    assert c.flops_other == 2 * (8 + 4)
    r = stats_of(_one("MaxRoiPool", [("x", [1, 2, 6, 6]), ("rois", [2, 5])], pooled_shape=[2, 2]))
    assert row(r, "n").macs is None and r.unknown_ops == ["MaxRoiPool"]
    assert "depends on the values of its input 'rois'" in r.warning()
