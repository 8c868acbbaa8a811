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


def test_roi_align_adaptive_sampling_from_constant_regions():
    # region (x1, y1, x2, y2) = (0, 0, 4, 6) into 2x2 bins, sampling_ratio 0: ⌈6/2⌉·⌈4/2⌉ = 6 points
    # a bin; 1 channel x 4 bins x 6 points x 5
    m = _one("RoiAlign", [("x", [1, 1, 8, 8])], [init("rois", [1, 4], value=[0, 0, 4, 6]), init("idx", [1], np.int64, 0)],
             output_height=2, output_width=2)
    assert row(stats_of(m), "n").flops_other == 5 * 4 * 6


def test_max_roi_pool_reads_constant_regions_and_is_unknown_on_data():
    # regions (x1, y1, x2, y2) = (0, 0, 3, 1): 4x2 pixels, and (1, 1, 2, 2): 2x2; 2 channels
    rois = init("rois", [2, 5], value=[0, 0, 0, 3, 1, 0, 1, 1, 2, 2])
    c = row(stats_of(_one("MaxRoiPool", [("x", [1, 2, 6, 6])], [rois], pooled_shape=[2, 2])), "n")
    assert c.flops_other == 2 * (8 + 4)
    r = stats_of(_one("MaxRoiPool", [("x", [1, 2, 6, 6]), ("rois", [2, 5])], pooled_shape=[2, 2]))
    assert row(r, "n").macs is None and r.unknown_ops == ["MaxRoiPool"]
    assert "depends on the values of its input 'rois'" in r.warning()


# ----------------------------------------------------------------------------- quantized layers
# a 2x5x5 input, a 3x2x3x3 kernel, no pads: 1x3x3x3 out, 27 outputs x 18 MACs = 486

QMACS = 1 * 3 * 3 * 3 * 2 * 3 * 3


def _q(name, shape, dtype, value=0):
    return init(name, shape, dtype, np.full(int(np.prod(shape)), value))


def test_qlinear_conv_counts_int8_macs_and_integer_params():
    inits = [_q("xs", [], np.float32, 0.1), _q("xz", [], np.uint8), _q("w", [3, 2, 3, 3], np.int8),
             _q("ws", [], np.float32, 0.1), _q("wz", [], np.int8), _q("ys", [], np.float32, 0.1),
             _q("yz", [], np.uint8), _q("b", [3], np.int32)]
    m = _one("QLinearConv", [("x", [1, 2, 5, 5], TensorProto.UINT8)], inits)
    r = stats_of(m)
    c = row(r, "n")
    assert c.macs == QMACS
    assert (c.kernel, c.stride, c.pads, c.groups) == ([3, 3], [1, 1], [0, 0, 0, 0], 1)  # its window, as Conv's
    assert c.flops_other == 27 * (1 + 1)  # requantize, bias add
    assert c.params == 54 + 3  # int8 weight, int32 bias; scales and zero points are configuration
    assert r.totals["weight_bytes"] == {"int8": 54, "int32": 12}
    assert r.totals["macs_int8"] == QMACS


def _qdq_conv(activation_quantized: bool):
    """x -> [QuantizeLinear -> DequantizeLinear] -> Conv(DQ(int8 w), DQ(int32 b)), ONNX QDQ format."""
    nodes = [helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"]),
             helper.make_node("DequantizeLinear", ["bq", "bs"], ["b"])]
    x = "x"
    if activation_quantized:
        nodes += [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"])]
        x = "xd"
    nodes.append(helper.make_node("Conv", [x, "w", "b"], ["y"], name="conv"))
    inits = [_q("wq", [3, 2, 3, 3], np.int8), _q("ws", [], np.float32, 0.1), _q("wz", [], np.int8),
             _q("bq", [3], np.int32), _q("bs", [], np.float32, 0.01), _q("xs", [], np.float32, 0.1),
             _q("xz", [], np.uint8)]
    return make_model(nodes, [vi("x", [1, 2, 5, 5])], [out()], inits)


def test_qdq_conv_weight_counted_once_in_its_stored_dtype_and_macs_int8():
    r = stats_of(_qdq_conv(True))
    c = row(r, "conv")
    assert (c.macs, c.params) == (QMACS, 54 + 3)  # the DequantizeLinear of the weight is folded
    assert r.totals["weight_bytes"] == {"int8": 54, "int32": 12}
    assert r.totals["macs_int8"] == QMACS
    assert [x.op for x in r.layers] == ["QuantizeLinear", "DequantizeLinear", "Conv"]
    # weight-only quantization: the activation stays float, so the MACs are float MACs
    r = stats_of(_qdq_conv(False))
    assert (r.totals["macs"], r.totals["macs_int8"]) == (QMACS, 0)


def test_qdq_matmul_through_a_transposed_weight():
    # a 2x4 uint8-dequantized activation times DQ(int8 3x4 weight) transposed: 2·3·4 int8 MACs
    nodes = [helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"]),
             helper.make_node("Transpose", ["wd"], ["wt"], perm=[1, 0]),
             helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("MatMul", ["xd", "wt"], ["y"], name="mm")]
    inits = [_q("wq", [3, 4], np.int8), _q("ws", [], np.float32, 0.1), _q("xs", [], np.float32, 0.1),
             _q("xz", [], np.uint8)]
    r = stats_of(make_model(nodes, [vi("x", [2, 4])], [out()], inits))
    assert (row(r, "mm").macs, row(r, "mm").params) == (24, 12)
    assert r.totals["macs_int8"] == 24 and r.totals["weight_bytes"] == {"int8": 12}


def test_dynamic_quantization_is_no_longer_zero_macs():
    # x -> DynamicQuantizeLinear -> ConvInteger(uint8 x, int8 w, x zero point); MatMulInteger beside
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dql"),
             helper.make_node("ConvInteger", ["xq", "w", "xz"], ["y"], name="conv"),
             helper.make_node("MatMulInteger", ["a", "b"], ["z"], name="mm")]
    m = make_model(nodes, [vi("x", [1, 2, 5, 5]), vi("a", [2, 4], TensorProto.UINT8)], [out("y"), out("z")],
                   [_q("w", [3, 2, 3, 3], np.int8), _q("b", [4, 3], np.int8)])
    r = stats_of(m)
    assert row(r, "dql").flops_other == 3 * 50  # min, max, quantize per input element
    assert (row(r, "conv").macs, row(r, "conv").params) == (QMACS, 54)
    assert (row(r, "mm").macs, row(r, "mm").params) == (2 * 3 * 4, 12)
    assert r.totals["macs"] == r.totals["macs_int8"] == QMACS + 24
    assert r.totals["weight_bytes"] == {"int8": 54 + 12}


MS = ("com.microsoft", 1)


def _ms(op, inputs, inits, y_shape, **attrs):
    names = [i[0] for i in inputs] + [t.name if t is not None else "" for t in inits]
    node = helper.make_node(op, names, ["y"], name="n", domain="com.microsoft", **attrs)
    return make_model([node], [vi(i[0], i[1], *i[2:]) for i in inputs], [vi("y", y_shape)],
                      [t for t in inits if t is not None], extra_opsets=[MS])


def test_com_microsoft_fused_conv_and_dynamic_quantize_matmul():
    m = _ms("FusedConv", [("x", [1, 2, 5, 5])], [init("W", [3, 2, 3, 3]), init("B", [3])], [1, 3, 3, 3],
            activation="Relu")
    c = row(stats_of(m), "n")
    assert (c.macs, c.flops_other, c.params) == (QMACS, 27 * 2, 57)  # bias, activation
    # A 2x4 float (quantized at run time), B 4x3 int8, bias 3
    m = _ms("DynamicQuantizeMatMul", [("a", [2, 4])],
            [_q("b", [4, 3], np.int8), _q("bs", [], np.float32, 0.1), _q("bz", [], np.int8), init("bias", [3])],
            [2, 3])
    r = stats_of(m)
    c = row(r, "n")
    assert c.macs == r.totals["macs_int8"] == 2 * 3 * 4
    assert c.flops_other == 6 * (1 + 1) + 3 * 8  # rescale + bias per output; quantize A: 3 per element
    assert c.params == 12 + 3


def test_com_microsoft_dynamic_quantize_lstm_as_lstm():
    # S 5, N 2, I 3, H 4; W int8 1x3x16 (input x 4H), R int8 1x4x16, B 1x32
    ins = ["x", "W", "R", "B", "", "", "", "", "ws", "wz", "rs", "rz"]
    node = helper.make_node("DynamicQuantizeLSTM", ins, ["y"], name="n", domain="com.microsoft", hidden_size=4)
    inits = [_q("W", [1, 3, 16], np.int8), _q("R", [1, 4, 16], np.int8), init("B", [1, 32]),
             _q("ws", [1], np.float32, 0.1), _q("wz", [1], np.int8), _q("rs", [1], np.float32, 0.1),
             _q("rz", [1], np.int8)]
    r = stats_of(make_model([node], [vi("x", [5, 2, 3])], [vi("y", [5, 1, 2, 4])], inits, extra_opsets=[MS]))
    c = row(r, "n")
    assert (c.macs, c.params) == (1120, 48 + 64 + 32)  # as test_lstm_forward_with_bias
    assert r.totals["macs_int8"] == 1120


def _float_conv_model():
    rng = np.random.default_rng(0)

    def w(name, shape):
        return init(name, shape, value=rng.standard_normal(int(np.prod(shape))))

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Flatten", ["r2"], ["f"]),
             helper.make_node("MatMul", ["f", "w3"], ["m"]),
             helper.make_node("Add", ["m", "b3"], ["y"])]
    inits = [w("w1", [4, 3, 3, 3]), w("b1", [4]), w("w2", [6, 4, 3, 3]), w("b2", [6]), w("w3", [54, 5]), w("b3", [5])]
    return make_model(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", [1, 5])], inits)


@pytest.mark.parametrize("how", ["dynamic", "static-qdq", "static-qoperator"])
def test_onnxruntime_quantizer_keeps_macs_and_params_of_the_float_model(tmp_path, how):
    q = pytest.importorskip("onnxruntime.quantization")
    float_path, q_path = tmp_path / "float.onnx", tmp_path / "q.onnx"
    onnx.save(_float_conv_model(), str(float_path))
    if how == "dynamic":
        q.quantize_dynamic(str(float_path), str(q_path), weight_type=q.QuantType.QInt8,
                           op_types_to_quantize=["Conv", "MatMul"])
    else:
        rng = np.random.default_rng(1)

        class Reader(q.CalibrationDataReader):
            def __init__(self):
                self.batches = iter([{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(4)])

            def get_next(self):
                return next(self.batches, None)

        fmt = q.QuantFormat.QDQ if how == "static-qdq" else q.QuantFormat.QOperator
        q.quantize_static(str(float_path), str(q_path), Reader(), quant_format=fmt, weight_type=q.QuantType.QInt8)
    f, t = stats_of(onnx.load(str(float_path))).totals, stats_of(onnx.load(str(q_path))).totals
    assert f["macs"] == 4 * 8 * 8 * 27 + 6 * 3 * 3 * 36 + 5 * 54  # 9,126
    assert f["params"] == 108 + 4 + 216 + 6 + 270 + 5  # 609
    assert t["unknown_ops"] == [] and t["macs"] == t["macs_int8"] == f["macs"]
    assert t["params"] == f["params"]
    assert t["weight_bytes"]["int8"] >= 594  # the three weights, 1 byte a param now


# ----------------------------------------------------------------------------- learned one-element params


def _affine(scale, bias, literal, literal_as_constant_node=False):
    """hgnetv2's LearnableAffineBlock, y = scale * x + bias with one-element learned ``scale`` and
    ``bias``, then z = y * ``literal`` (0.5, an exporter's literal; a Constant node, or an
    initializer)."""
    nodes = [helper.make_node("Mul", ["x", scale], ["s"], name="mul"),
             helper.make_node("Add", ["s", bias], ["y"], name="add"),
             helper.make_node("Mul", ["y", literal], ["z"], name="half")]
    tensors = [init(scale, [1], value=[1.5]), init(bias, [1], value=[0.25])]
    half = init(literal, [], value=0.5)
    if literal_as_constant_node:
        nodes.insert(0, helper.make_node("Constant", [], [literal], value=half))
    else:
        tensors.append(half)
    return make_model(nodes, [vi("x", [1, 4, 3, 3])], [out("z")], tensors)


@pytest.mark.parametrize("scale, bias, literal, constant_node", [
    # TorchScript: parameters keep their state_dict keys; literals are Constant nodes, or
    # initializers named onnx::Mul_12 after constant folding
    ("stages.0.blocks.1.lab.scale", "stages.0.blocks.1.lab.bias", "/blk/Constant_output_0", True),
    ("stages.0.blocks.1.lab.scale", "stages.0.blocks.1.lab.bias", "onnx::Mul_12", False),
    ("stages.0.blocks.1.lab.scale", "stages.0.blocks.1.lab.bias", "/blk/Constant_1_output_0", False),
    # the dynamo exporter: the same keys; lifted literals val_3, _val_4, scalar_tensor_default
    ("stages.0.blocks.1.lab.scale", "stages.0.blocks.1.lab.bias", "val_3", False),
    ("stages.0.blocks.1.lab.scale", "stages.0.blocks.1.lab.bias", "_val_4", False),
    ("stages.0.blocks.1.lab.scale", "stages.0.blocks.1.lab.bias", "scalar_tensor_default", False),
    ("gamma", "beta", "lifted_tensor_0", False),
    # tf2onnx's literals; onnxruntime's quantizer's scale beside a quantized weight (below)
    ("gamma", "beta", "const_fold_opt__7", False),
    ("gamma", "beta", "model/tf.math.multiply/Mul/y:0", False),
    ("gamma", "beta", "w_scale", False),
    # a Constant node is a literal whatever its name
    ("gamma", "beta", "stages.0.half", True),
])
def test_learned_one_element_params_against_exporter_literals(scale, bias, literal, constant_node):
    m = _affine(scale, bias, literal, constant_node)
    m.graph.initializer.append(_q("w_quantized", [2, 2], np.int8))  # makes w_scale the quantizer's
    r = stats_of(m)
    assert (row(r, "mul").params, row(r, "add").params, row(r, "half").params) == (1, 1, 0)
    assert r.totals["params"] == 2 and r.totals["weight_bytes"] == {"float32": 8}
    assert row(r, "half").flops_other == 36  # the literal's Mul is still costed


def test_onnxruntime_dynamic_quantization_of_an_lstm(tmp_path):
    # S 5, N 2, I 4, H 8: 10 rows x 4·8·(4 + 8) = 3,840 MACs; W 128 + R 256 params (int8 now), B 64
    q = pytest.importorskip("onnxruntime.quantization")
    rng = np.random.default_rng(0)
    inits = [init(n, s, value=rng.standard_normal(int(np.prod(s)))) for n, s in
             (("W", [1, 32, 4]), ("R", [1, 32, 8]), ("B", [1, 64]))]
    node = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y", "yh"], hidden_size=8)
    float_path, q_path = tmp_path / "lstm.onnx", tmp_path / "q.onnx"
    onnx.save(make_model([node], [vi("x", [5, 2, 4])], [out()], inits), str(float_path))
    q.quantize_dynamic(str(float_path), str(q_path), weight_type=q.QuantType.QInt8, op_types_to_quantize=["LSTM"])
    quantized = onnx.load(str(q_path))
    assert [n.op_type for n in quantized.graph.node] == ["DynamicQuantizeLSTM"]
    f, t = stats_of(onnx.load(str(float_path))).totals, stats_of(quantized).totals
    assert f["macs"] == t["macs"] == t["macs_int8"] == 10 * 4 * 8 * (4 + 8)
    assert f["params"] == t["params"] == 128 + 256 + 64
    assert t["weight_bytes"] == {"int8": 128 + 256, "float32": 64 * 4}
