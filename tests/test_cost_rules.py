"""Cost rules on tiny hand-built graphs: every expected number is worked out by hand here.

Notation in the comments: N batch, Cin/Cout channels, H/W spatial sizes, k kernel, g groups.
Conv MACs = N·Cout·Hout·Wout·(Cin/g)·kh·kw; ConvTranspose MACs = N·Cin·Hin·Win·(Cout/g)·kh·kw;
CPR = MACs / weight params (bias excluded); FLOPs = 2·MACs + flops_other.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from helpers import conv_model, init, loop_model, make_model, out, row, stats_of, vi

# ----------------------------------------------------------------------------- Conv family


def test_grouped_conv():
    # x 1x16x8x8, W 32x(16/4)x3x3, group 4, pad 1 -> y 1x32x8x8, with bias
    r = stats_of(conv_model([1, 16, 8, 8], [32, 16 // 4, 3, 3], bias=True, group=4, pads=[1, 1, 1, 1]))
    c = row(r, "conv")
    assert c.op == "Conv"
    assert c.index == 1
    assert c.input_shape == [1, 16, 8, 8]
    assert c.output_shape == [1, 32, 8, 8]
    assert c.kernel == [3, 3]
    assert c.stride == [1, 1]
    assert c.pads == [1, 1, 1, 1]
    assert c.dilation == [1, 1]
    assert c.groups == 4
    assert c.macs == 1 * 32 * 8 * 8 * (16 // 4) * 3 * 3  # 73,728
    assert c.params == 32 * (16 // 4) * 3 * 3 + 32  # weights + bias
    assert c.buffers == 0
    assert c.flops_other == 1 * 32 * 8 * 8  # one bias add per output element
    assert c.cpr == 1 * 8 * 8  # N·Hout·Wout
    assert c.act_bytes == 1 * 32 * 8 * 8 * 4  # float32 output
    t = r.totals
    assert t["macs"] == 1 * 32 * 8 * 8 * (16 // 4) * 3 * 3
    assert t["params"] == 32 * 4 * 3 * 3 + 32
    assert t["flops"] == 2 * (32 * 8 * 8 * 4 * 3 * 3) + 32 * 8 * 8
    assert t["flops_other"] == 32 * 8 * 8
    assert t["convs"] == 1
    assert t["incomplete"] is False
    assert t["unknown_ops"] == []
    assert t["weight_bytes"] == {"float32": (32 * 4 * 3 * 3 + 32) * 4}
    assert t["largest_activation"] == {"name": "conv", "bytes": 32 * 8 * 8 * 4}


def test_depthwise_conv():
    # x 1x8x10x10, W 8x1x3x3, group 8, stride 2, pad 1 -> Hout = (10+2-3)//2+1 = 5
    r = stats_of(conv_model([1, 8, 10, 10], [8, 1, 3, 3], group=8, strides=[2, 2], pads=[1, 1, 1, 1]))
    c = row(r, "conv")
    assert c.output_shape == [1, 8, 5, 5]
    assert c.groups == 8
    assert c.stride == [2, 2]
    assert c.macs == 1 * 8 * 5 * 5 * (8 // 8) * 3 * 3  # 1,800
    assert c.params == 8 * 1 * 3 * 3
    assert c.flops_other == 0  # no bias
    assert c.cpr == 5 * 5
    assert r.totals["flops"] == 2 * 1800


def test_dilated_conv():
    # x 1x2x10x10, W 4x2x3x3, dilation 2 -> effective kernel (3-1)*2+1 = 5, Hout = 10-5+1 = 6
    r = stats_of(conv_model([1, 2, 10, 10], [4, 2, 3, 3], dilations=[2, 2]))
    c = row(r, "conv")
    assert c.output_shape == [1, 4, 6, 6]
    assert c.dilation == [2, 2]
    assert c.macs == 1 * 4 * 6 * 6 * 2 * 3 * 3  # 2,592
    assert c.params == 4 * 2 * 3 * 3
    assert c.cpr == 6 * 6
    # receptive field of a dilated 3x3 conv is 5 pixels, stride 1
    assert c.rf == [5, 5]
    assert c.rf_stride == [1, 1]


def test_asymmetric_pads():
    # pads [h_begin=0, w_begin=1, h_end=2, w_end=0], stride 2, x 1x1x7x7, W 2x1x3x3
    # Hout = (7+0+2-3)//2+1 = 4 ; Wout = (7+1+0-3)//2+1 = 3
    r = stats_of(conv_model([1, 1, 7, 7], [2, 1, 3, 3], strides=[2, 2], pads=[0, 1, 2, 0]))
    c = row(r, "conv")
    assert c.output_shape == [1, 2, 4, 3]
    assert c.pads == [0, 1, 2, 0]
    assert c.macs == 1 * 2 * 4 * 3 * 1 * 3 * 3  # 216
    assert c.cpr == 4 * 3
    assert c.rf == [3, 3]
    assert c.rf_stride == [2, 2]


def test_auto_pad_same_upper():
    # x 1x3x9x9, W 4x3x4x4, stride 2, SAME_UPPER: Hout = ceil(9/2) = 5;
    # total pad = (5-1)*2 + 4 - 9 = 3 -> begin 1, end 2 (the odd pixel goes at the end)
    r = stats_of(conv_model([1, 3, 9, 9], [4, 3, 4, 4], strides=[2, 2], auto_pad="SAME_UPPER"))
    c = row(r, "conv")
    assert c.output_shape == [1, 4, 5, 5]
    assert c.pads == [1, 1, 2, 2]
    assert c.kernel == [4, 4]
    assert c.macs == 1 * 4 * 5 * 5 * 3 * 4 * 4  # 4,800
    assert c.params == 4 * 3 * 4 * 4
    assert c.cpr == 5 * 5


def test_conv_transpose_stride_and_groups():
    # x 1x4x5x5, W (Cin=4, Cout/g=3, 3, 3), group 2 -> Cout = 6; stride 2: Hout = (5-1)*2+3 = 11
    # MACs on the INPUT grid: N·Cin·Hin·Win·(Cout/g)·kh·kw
    inits = [init("W", [4, 3, 3, 3]), init("B", [6])]
    node = helper.make_node("ConvTranspose", ["x", "W", "B"], ["y"], name="deconv", group=2, strides=[2, 2])
    r = stats_of(make_model([node], [vi("x", [1, 4, 5, 5])], [out()], inits))
    c = row(r, "deconv")
    assert c.output_shape == [1, 6, 11, 11]
    assert c.index is None  # '#' numbers Convs only
    assert c.groups == 2
    assert c.stride == [2, 2]
    assert c.macs == 1 * 4 * 5 * 5 * (6 // 2) * 3 * 3  # 2,700
    assert c.params == 4 * 3 * 3 * 3 + 6
    assert c.flops_other == 1 * 6 * 11 * 11  # bias add per output element
    assert c.cpr == (4 * 5 * 5 * 3 * 3 * 3) // (4 * 3 * 3 * 3)  # = Hin·Win = 25
    assert r.totals["convs"] == 0


# ----------------------------------------------------------------------------- Gemm / MatMul / Einsum


def test_gemm_trans_a():
    # A is 8x2 and transposed (K=8, M=2), B 8x5 -> Y 2x5; MACs = M·N·K
    node = helper.make_node("Gemm", ["a", "W"], ["y"], name="fc", transA=1)
    r = stats_of(make_model([node], [vi("a", [8, 2])], [out()], [init("W", [8, 5])]))
    c = row(r, "fc")
    assert c.output_shape == [2, 5]
    assert c.macs == 2 * 5 * 8  # 80
    assert c.params == 8 * 5
    assert c.flops_other == 0
    assert c.cpr == 2  # a fully connected layer: CPR = rows of the batch


def test_gemm_trans_b_with_bias():
    # X 3x6, W 4x6 with transB, C (4,) -> Y 3x4
    node = helper.make_node("Gemm", ["x", "W", "C"], ["y"], name="fc", transB=1)
    r = stats_of(make_model([node], [vi("x", [3, 6])], [out()], [init("W", [4, 6]), init("C", [4])]))
    c = row(r, "fc")
    assert c.output_shape == [3, 4]
    assert c.macs == 3 * 4 * 6  # 72
    assert c.flops_other == 3 * 4  # the bias adds
    assert c.params == 4 * 6 + 4
    assert c.cpr == 3  # N
    assert r.totals["flops"] == 2 * 72 + 12


def test_gemm_with_an_output_dim_unknown_is_unknown_not_a_crash():
    # B comes from an op nobody knows, so Y is [2, ?]: the row's MACs are unknown and totals say so
    mystery = helper.make_node("Mystery", ["s"], ["W"], name="mystery", domain="com.example")
    node = helper.make_node("Gemm", ["a", "W"], ["y"], name="fc")
    model = make_model([mystery, node], [vi("a", [2, 8]), vi("s", [3])], [out()], extra_opsets=[("com.example", 1)])
    r = stats_of(model)
    c = row(r, "fc")
    assert c.macs is None
    assert r.totals["incomplete"] is True


def test_gemm_cpr_is_batch():
    # symbolic batch 4: X Nx10, W 10x7 -> MACs 4*7*10, CPR = N = 4
    node = helper.make_node("Gemm", ["x", "W"], ["y"], name="fc")
    r = stats_of(make_model([node], [vi("x", ["N", 10])], [out()], [init("W", [10, 7])]), batch=4)
    c = row(r, "fc")
    assert c.macs == 4 * 7 * 10
    assert c.cpr == 4


def test_batched_matmul_broadcast():
    # A (2,1,4,3) @ B (5,3,6): batch dims broadcast to (2,5) -> Y (2,5,4,6); K = 3
    node = helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")
    r = stats_of(make_model([node], [vi("a", [2, 1, 4, 3]), vi("b", [5, 3, 6])], [out()]))
    c = row(r, "mm")
    assert c.output_shape == [2, 5, 4, 6]
    assert c.macs == 2 * 5 * 4 * 6 * 3  # 720
    assert c.params == 0
    assert c.cpr is None  # no weights, no CPR
    assert r.totals["params"] == 0


def test_matmul_with_weight():
    # X (1,7,3) @ W (3,6) -> (1,7,6)
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    r = stats_of(make_model([node], [vi("x", [1, 7, 3])], [out()], [init("W", [3, 6])]))
    c = row(r, "mm")
    assert c.macs == 1 * 7 * 6 * 3  # 126
    assert c.params == 3 * 6
    assert c.cpr == 7


def test_einsum():
    # 'bij,jk->bik' with X (2,3,4), W (4,5): MACs = b·i·j·k
    node = helper.make_node("Einsum", ["x", "W"], ["y"], name="ein", equation="bij,jk->bik")
    r = stats_of(make_model([node], [vi("x", [2, 3, 4])], [out()], [init("W", [4, 5])]))
    c = row(r, "ein")
    assert c.output_shape == [2, 3, 5]
    assert c.macs == 2 * 3 * 4 * 5  # 120
    assert c.params == 4 * 5
    assert c.cpr == 120 // 20


# ----------------------------------------------------------------------------- where params live


def _two_conv_graph(w_source_nodes, w_inits, w_name="W"):
    """x 1x3x8x8 -> convA(W) and convB(W), pad 1, 4 output channels, summed by Add."""
    nodes = list(w_source_nodes) + [
        helper.make_node("Conv", ["x", w_name], ["a"], name="convA", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", w_name], ["b"], name="convB", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["a", "b"], ["y"], name="add"),
    ]
    return make_model(nodes, [vi("x", [1, 3, 8, 8])], [out()], w_inits)


def test_shared_weight_counts_once():
    r = stats_of(_two_conv_graph([], [init("W", [4, 3, 3, 3])]))
    a, b = row(r, "convA"), row(r, "convB")
    assert a.index == 1 and b.index == 2
    assert a.macs == b.macs == 1 * 4 * 8 * 8 * 3 * 3 * 3  # 6,912 each
    assert a.params + b.params == 4 * 3 * 3 * 3  # one tensor, counted once
    assert a.cpr == b.cpr == 8 * 8  # the shared weight is still each conv's weight
    assert r.totals["params"] == 4 * 3 * 3 * 3
    assert r.totals["macs"] == 2 * (4 * 8 * 8 * 3 * 3 * 3)
    assert r.totals["weight_bytes"] == {"float32": 4 * 3 * 3 * 3 * 4}
    # the Add costs one FLOP per output element
    assert row(r, "add").flops_other == 4 * 8 * 8


def test_shared_weight_through_two_identities_counts_once():
    nodes = [
        helper.make_node("Identity", ["W"], ["W1"], name="id1"),
        helper.make_node("Identity", ["W"], ["W2"], name="id2"),
        helper.make_node("Conv", ["x", "W1"], ["a"], name="convA", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "W2"], ["b"], name="convB", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["a", "b"], ["y"], name="add"),
    ]
    r = stats_of(make_model(nodes, [vi("x", [1, 3, 8, 8])], [out()], [init("W", [4, 3, 3, 3])]))
    assert r.totals["params"] == 4 * 3 * 3 * 3
    assert [x.name for x in r.layers] == ["convA", "convB", "add"]  # weight plumbing has no rows


def test_constant_of_shape_weights():
    # an int64 shape tensor [4,3,3,3] -> ConstantOfShape(float 0.01) -> conv weight
    shape = init("W_shape", [4], np.int64, [4, 3, 3, 3])
    cos = helper.make_node(
        "ConstantOfShape", ["W_shape"], ["W"], name="W_const",
        value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.01]),
    )
    conv = helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1])
    r = stats_of(make_model([cos, conv], [vi("x", [1, 3, 8, 8])], [out()], [shape]))
    c = row(r, "conv")
    assert c.params == 4 * 3 * 3 * 3  # the 4 int64 shape values are not params
    assert c.macs == 4 * 8 * 8 * 3 * 3 * 3
    assert c.cpr == 8 * 8
    assert r.totals["params"] == 108
    assert r.totals["weight_bytes"] == {"float32": 108 * 4}
    assert [x.name for x in r.layers] == ["conv"]


def test_constant_of_shape_with_constant_node_shape():
    # the shape itself comes from a Constant node (value_ints)
    shape = helper.make_node("Constant", [], ["W_shape"], name="shape_const", value_ints=[4, 3, 3, 3])
    cos = helper.make_node("ConstantOfShape", ["W_shape"], ["W"], name="W_const")
    conv = helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1])
    r = stats_of(make_model([shape, cos, conv], [vi("x", [1, 3, 8, 8])], [out()]))
    assert row(r, "conv").params == 4 * 3 * 3 * 3
    assert r.totals["params"] == 108


def test_constant_node_weights():
    w = helper.make_tensor("Wt", TensorProto.FLOAT, [4, 3, 3, 3], np.zeros(108, np.float32))
    const = helper.make_node("Constant", [], ["W"], name="W_const", value=w)
    conv = helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1])
    r = stats_of(make_model([const, conv], [vi("x", [1, 3, 8, 8])], [out()]))
    c = row(r, "conv")
    assert c.params == 4 * 3 * 3 * 3
    assert c.cpr == 8 * 8
    assert r.totals["params"] == 108
    assert [x.name for x in r.layers] == ["conv"]


def test_weight_through_identity():
    nodes = [
        helper.make_node("Identity", ["W"], ["W_id"], name="wid"),
        helper.make_node("Conv", ["x", "W_id"], ["y"], name="conv"),
    ]
    r = stats_of(make_model(nodes, [vi("x", [1, 3, 8, 8])], [out()], [init("W", [4, 3, 3, 3])]))
    c = row(r, "conv")
    assert c.params == 4 * 3 * 3 * 3
    assert c.macs == 4 * 6 * 6 * 3 * 3 * 3  # no pad: 8-3+1 = 6
    assert c.cpr == 6 * 6


def test_weight_through_cast_from_float16():
    nodes = [
        helper.make_node("Cast", ["W16"], ["W"], name="wcast", to=TensorProto.FLOAT),
        helper.make_node("Conv", ["x", "W"], ["y"], name="conv"),
    ]
    r = stats_of(make_model(nodes, [vi("x", [1, 3, 8, 8])], [out()], [init("W16", [4, 3, 3, 3], np.float16)]))
    assert row(r, "conv").params == 108
    assert r.totals["params"] == 108
    assert r.totals["weight_bytes"] == {"float16": 108 * 2}  # stored as float16


def test_weight_through_reshape_shape_tensor_not_counted():
    # a flat (108,) weight reshaped by an int64 shape initializer [4,3,3,3]
    nodes = [
        helper.make_node("Reshape", ["W_flat", "W_shape"], ["W"], name="wreshape"),
        helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    inits = [init("W_flat", [108]), init("W_shape", [4], np.int64, [4, 3, 3, 3])]
    r = stats_of(make_model(nodes, [vi("x", [1, 3, 8, 8])], [out()], inits))
    c = row(r, "conv")
    assert c.params == 4 * 3 * 3 * 3
    assert c.macs == 4 * 8 * 8 * 3 * 3 * 3
    assert r.totals["params"] == 108  # not 108 + 4
    assert r.totals["weight_bytes"] == {"float32": 108 * 4}


def test_weight_through_transpose_into_matmul():
    # X (1,7,3) @ Transpose(W (6,3)) -> (1,7,6)
    nodes = [
        helper.make_node("Transpose", ["W"], ["Wt"], name="wt", perm=[1, 0]),
        helper.make_node("MatMul", ["x", "Wt"], ["y"], name="mm"),
    ]
    r = stats_of(make_model(nodes, [vi("x", [1, 7, 3])], [out()], [init("W", [6, 3])]))
    assert [x.name for x in r.layers] == ["mm"]
    assert row(r, "mm").macs == 1 * 7 * 6 * 3
    assert row(r, "mm").params == 6 * 3
    assert row(r, "mm").cpr == 7


def test_int8_weight_dequantized():
    # int8 W (4,3,3,3) with a float scale and int8 zero point -> DequantizeLinear -> conv
    nodes = [
        helper.make_node("DequantizeLinear", ["Wq", "scale", "zp"], ["W"], name="dq"),
        helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    inits = [init("Wq", [4, 3, 3, 3], np.int8), init("scale", [], np.float32, 0.1), init("zp", [], np.int8, 0)]
    r = stats_of(make_model(nodes, [vi("x", [1, 3, 8, 8])], [out()], inits))
    c = row(r, "conv")
    assert c.params == 4 * 3 * 3 * 3
    assert c.macs == 4 * 8 * 8 * 3 * 3 * 3
    assert c.cpr == 8 * 8
    assert r.totals["params"] == 108
    assert r.totals["weight_bytes"] == {"int8": 108}  # one byte per stored int8 weight


def test_integer_shape_arithmetic_not_params():
    # Shape(y) * int64 ones -> Reshape target; Flatten-like reshape via an int64 initializer
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),  # 1x4x6x6
        helper.make_node("Shape", ["c"], ["s"], name="shape"),
        helper.make_node("Mul", ["s", "ones"], ["s2"], name="shape_mul"),
        helper.make_node("Reshape", ["c", "s2"], ["c2"], name="reshape_same"),
        helper.make_node("Reshape", ["c2", "flat_shape"], ["f"], name="flatten"),  # 1x144
        helper.make_node("Gemm", ["f", "Wfc"], ["y"], name="fc"),
    ]
    inits = [
        init("W", [4, 3, 3, 3]),
        init("ones", [4], np.int64, [1, 1, 1, 1]),
        init("flat_shape", [2], np.int64, [1, -1]),
        init("Wfc", [144, 10]),
    ]
    r = stats_of(make_model(nodes, [vi("x", [1, 3, 8, 8])], [out()], inits))
    assert row(r, "fc").macs == 1 * 10 * (4 * 6 * 6)
    assert row(r, "fc").params == 144 * 10
    assert r.totals["params"] == 4 * 3 * 3 * 3 + 144 * 10  # int64 'ones' and shapes excluded
    assert set(r.totals["weight_bytes"]) == {"float32"}
    assert r.totals["incomplete"] is False


def test_batch_normalization_params_and_buffers():
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "mean", "var"], ["y"], name="bn")]
    inits = [init("s", [4]), init("b", [4]), init("mean", [4]), init("var", [4])]
    r = stats_of(make_model(nodes, [vi("x", [1, 4, 5, 5])], [out()], inits))
    bn = row(r, "bn")
    assert bn.params == 4 + 4  # scale + bias
    assert bn.buffers == 4 + 4  # running mean + variance
    assert bn.macs == 0
    assert bn.cpr is None
    assert r.totals["params"] == 8
    assert r.totals["buffers"] == 8


def test_custom_op_float_constant_inputs_count_as_params():
    # an op we do not know: its float constant inputs are still weights the model stores
    nodes = [helper.make_node("Scale", ["x", "gain"], ["y"], name="custom", domain="com.example")]
    model = make_model(nodes, [vi("x", [1, 4, 5, 5])], [vi("y", [1, 4, 5, 5])], [init("gain", [4])],
                       extra_opsets=[("com.example", 1)])
    r = stats_of(model)
    assert r.totals["params"] == 4


# ----------------------------------------------------------------------------- batch and shapes


def _symbolic_conv():
    # x [N,3,8,8] -> conv 4x3x3x3 pad 1 with bias
    return conv_model(["N", 3, 8, 8], [4, 3, 3, 3], bias=True, pads=[1, 1, 1, 1])


def test_symbolic_batch_default_is_one():
    r = stats_of(_symbolic_conv())
    c = row(r, "conv")
    assert c.input_shape == [1, 3, 8, 8]
    assert c.macs == 1 * 4 * 8 * 8 * 3 * 3 * 3  # 6,912
    assert c.params == 4 * 3 * 3 * 3 + 4
    assert c.cpr == 1 * 8 * 8


def test_symbolic_batch_four_scales_macs_not_params():
    from cnncli.frontend.graph import analyse

    g = analyse(_symbolic_conv(), batch=4)
    assert g.inputs[0].shape == (4, 3, 8, 8)
    r = stats_of(_symbolic_conv(), batch=4)
    c = row(r, "conv")
    assert c.input_shape == [4, 3, 8, 8]
    assert c.output_shape == [4, 4, 8, 8]
    assert c.macs == 4 * 4 * 8 * 8 * 3 * 3 * 3  # 27,648 = 4 × 6,912
    assert c.params == 4 * 3 * 3 * 3 + 4  # unchanged
    assert c.cpr == 4 * 8 * 8  # N·Hout·Wout
    assert c.flops_other == 4 * 4 * 8 * 8
    assert c.act_bytes == 4 * 4 * 8 * 8 * 4
    assert r.totals["macs"] == 4 * stats_of(_symbolic_conv()).totals["macs"] == 27648
    assert r.totals["params"] == 112


def test_input_shape_override():
    # the model says 1x3x8x8; --input-shape x=2x3x16x16 wins
    model = conv_model([1, 3, 8, 8], [4, 3, 3, 3], pads=[1, 1, 1, 1])
    r = stats_of(model, input_shapes={"x": (2, 3, 16, 16)})
    c = row(r, "conv")
    assert c.input_shape == [2, 3, 16, 16]
    assert c.output_shape == [2, 4, 16, 16]
    assert c.macs == 2 * 4 * 16 * 16 * 3 * 3 * 3  # 55,296
    assert c.cpr == 2 * 16 * 16


def test_input_shape_override_resolves_symbolic_spatial_dims():
    model = conv_model(["N", 3, "H", "W"], [4, 3, 3, 3])
    r = stats_of(model, input_shapes={"x": (1, 3, 10, 12)})
    c = row(r, "conv")
    assert c.output_shape == [1, 4, 8, 10]
    assert c.macs == 1 * 4 * 8 * 10 * 3 * 3 * 3


def test_unknown_dim_is_a_clear_error():
    from cnncli.errors import CnnError
    from cnncli.frontend.graph import analyse

    with pytest.raises(CnnError) as e:
        analyse(conv_model(["N", 3, "height", 8], [4, 3, 3, 3], x_name="pixels"))
    assert "pixels" in str(e.value) and "height" in str(e.value)


# ----------------------------------------------------------------------------- unknown ops


def test_unknown_custom_domain_op():
    # conv (1x4x6x6) -> com.example.Mystery -> y
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
        helper.make_node("Mystery", ["c"], ["y"], name="mystery", domain="com.example"),
    ]
    model = make_model(nodes, [vi("x", [1, 3, 8, 8])], [out()], [init("W", [4, 3, 3, 3])],
                       extra_opsets=[("com.example", 1)])
    r = stats_of(model)
    m = row(r, "mystery")
    assert m.op == "Mystery"
    assert m.macs is None
    assert m.flops_other is None
    assert row(r, "conv").macs == 4 * 6 * 6 * 3 * 3 * 3  # the rest is still costed
    assert r.totals["incomplete"] is True
    assert r.unknown_ops == ["com.example.Mystery"]
    assert r.totals["unknown_ops"] == ["com.example.Mystery"]
    assert r.totals["macs"] == 4 * 6 * 6 * 3 * 3 * 3  # known part only


def test_loop_is_an_unknown_op():
    r = stats_of(loop_model())
    loop = row(r, "loop")
    assert loop.macs is None
    assert r.totals["incomplete"] is True
    assert r.unknown_ops == ["Loop"]
    assert r.totals["unknown_ops"] == ["Loop"]


# ----------------------------------------------------------------------------- receptive field, FLOPs


def test_receptive_field_chain():
    # conv k3 s1 -> maxpool k2 s2 -> conv k3 s1 -> conv k3 s2, on 1x1x32x32
    # size_out = size_in + (k-1)·dilation·jump_in ; jump_out = jump_in·stride
    #   conv1: 1 + 2·1 = 3, jump 1
    #   pool:  3 + 1·1 = 4, jump 2
    #   conv2: 4 + 2·2 = 8, jump 2
    #   conv3: 8 + 2·2 = 12, jump 4
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv1"),  # 30
        helper.make_node("MaxPool", ["c1"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),  # 15
        helper.make_node("Conv", ["p", "W2"], ["c2"], name="conv2"),  # 13
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "W3"], ["y"], name="conv3", strides=[2, 2]),  # 6
    ]
    inits = [init("W1", [2, 1, 3, 3]), init("W2", [2, 2, 3, 3]), init("W3", [2, 2, 3, 3])]
    r = stats_of(make_model(nodes, [vi("x", [1, 1, 32, 32])], [out()], inits))
    assert (row(r, "conv1").rf, row(r, "conv1").rf_stride) == ([3, 3], [1, 1])
    assert (row(r, "pool").rf, row(r, "pool").rf_stride) == ([4, 4], [2, 2])
    assert (row(r, "conv2").rf, row(r, "conv2").rf_stride) == ([8, 8], [2, 2])
    assert (row(r, "relu2").rf, row(r, "relu2").rf_stride) == ([8, 8], [2, 2])  # elementwise: unchanged
    assert (row(r, "conv3").rf, row(r, "conv3").rf_stride) == ([12, 12], [4, 4])
    assert row(r, "conv3").output_shape == [1, 2, 6, 6]
    assert [row(r, n).index for n in ("conv1", "conv2", "conv3")] == [1, 2, 3]
    assert row(r, "pool").index is None
    # MACs: conv1 2·30·30·1·9, conv2 2·13·13·2·9, conv3 2·6·6·2·9
    macs = 2 * 30 * 30 * 1 * 9 + 2 * 13 * 13 * 2 * 9 + 2 * 6 * 6 * 2 * 9
    assert r.totals["macs"] == macs
    assert r.totals["params"] == 2 * 1 * 9 + 2 * 2 * 9 + 2 * 2 * 9


def test_flops_total_is_two_macs_plus_other():
    # conv with bias (1x4x8x8 out) -> Relu -> Gemm with bias
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "Wfc", "Bfc"], ["y"], name="fc", transB=1),
    ]
    inits = [init("W", [4, 3, 3, 3]), init("B", [4]), init("Wfc", [10, 256]), init("Bfc", [10])]
    r = stats_of(make_model(nodes, [vi("x", [1, 3, 8, 8])], [out()], inits))
    conv_macs = 1 * 4 * 8 * 8 * 3 * 3 * 3
    fc_macs = 1 * 10 * (4 * 8 * 8)
    assert r.totals["macs"] == conv_macs + fc_macs
    assert row(r, "conv").flops_other == 4 * 8 * 8  # conv bias adds
    assert row(r, "relu").flops_other == 4 * 8 * 8  # one op per element
    assert row(r, "fc").flops_other == 10  # fc bias adds
    other = 4 * 8 * 8 + 4 * 8 * 8 + 10
    assert r.totals["flops_other"] == other
    assert r.totals["flops"] == 2 * (conv_macs + fc_macs) + other
    assert r.totals["params"] == 4 * 3 * 3 * 3 + 4 + 10 * 256 + 10
    assert [x.name for x in r.layers] == ["conv", "relu", "fc"]  # Flatten does no work
    assert row(r, "fc").cpr == 1


def test_receptive_field_through_concat_and_residual_add():
    # branch a: 1x1 conv (RF 1, start 0); branch b: 3x3 conv pad 1 (RF 3, start -1)
    # Concat covers both windows: from -1 to max(0+1, -1+3) = 2 -> 3 pixels, stride 1.
    # Add of x (RF 1) and a 3x3 pad-1 conv of x (RF 3) -> 3 as well.
    nodes = [
        helper.make_node("Conv", ["x", "Wa"], ["a"], name="conv_a"),
        helper.make_node("Conv", ["x", "Wb"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["a", "b"], ["cat"], name="concat", axis=1),
        helper.make_node("Conv", ["cat", "Wc"], ["c"], name="conv_c", pads=[1, 1, 1, 1]),  # 3 + 2 = 5
        helper.make_node("Conv", ["x", "Wd"], ["d"], name="conv_d", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["x", "d"], ["y"], name="residual"),
    ]
    inits = [init("Wa", [2, 3, 1, 1]), init("Wb", [2, 3, 3, 3]), init("Wc", [4, 4, 3, 3]), init("Wd", [3, 3, 3, 3])]
    r = stats_of(make_model(nodes, [vi("x", [1, 3, 8, 8])], [out("c"), out("y")], inits))
    assert row(r, "conv_a").rf == [1, 1]
    assert row(r, "conv_b").rf == [3, 3]
    assert row(r, "conv_c").rf == [5, 5]
    assert row(r, "residual").rf == [3, 3]
    assert row(r, "residual").rf_stride == [1, 1]
    assert row(r, "conv_c").macs == 4 * 8 * 8 * 4 * 3 * 3


def test_conv1d():
    # x 1x2x10, W 3x2x3 -> 1x3x8
    r = stats_of(conv_model([1, 2, 10], [3, 2, 3]))
    c = row(r, "conv")
    assert c.output_shape == [1, 3, 8]
    assert c.macs == 3 * 8 * 2 * 3
    assert c.cpr == 8
    assert c.kernel == [3]
    assert c.rf == [3]


def test_float16_activation_bytes():
    # float16 model: 2 bytes per output element, weights stored as float16
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    model = make_model(nodes, [vi("x", [1, 3, 8, 8], TensorProto.FLOAT16)], [vi("y", None, TensorProto.FLOAT16)],
                       [init("W", [4, 3, 3, 3], np.float16)])
    r = stats_of(model)
    assert row(r, "conv").act_bytes == 4 * 8 * 8 * 2
    assert row(r, "conv").params == 108
    assert r.totals["weight_bytes"] == {"float16": 108 * 2}


def test_unknown_op_mid_graph_never_crashes():
    # conv -> custom op (shape unknown) -> conv -> maxpool -> flatten -> gemm: no crash,
    # the rows after the custom op are unknown, their weights still counted
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv1"),
        helper.make_node("Mystery", ["c1"], ["m"], name="mystery", domain="com.example"),
        helper.make_node("Conv", ["m", "W2"], ["c2"], name="conv2"),
        helper.make_node("MaxPool", ["c2"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "Wfc"], ["y"], name="fc"),
    ]
    inits = [init("W1", [4, 3, 3, 3]), init("W2", [4, 4, 3, 3]), init("Wfc", [16, 10])]
    model = make_model(nodes, [vi("x", [1, 3, 8, 8])], [out()], inits, extra_opsets=[("com.example", 1)])
    r = stats_of(model)
    assert row(r, "conv1").macs == 4 * 6 * 6 * 3 * 3 * 3
    assert row(r, "mystery").macs is None
    assert row(r, "conv2").index == 2
    assert r.totals["incomplete"] is True
    # every op type whose cost is unknown (the custom op, and what its unknown shape reaches),
    # and the warning names the custom op as the first node that could not be costed
    assert r.unknown_ops == r.totals["unknown_ops"] == ["Conv", "Gemm", "MaxPool", "com.example.Mystery"]
    assert "'mystery' (Mystery)" in r.warning() and "no cost rule" in r.warning()
    assert r.totals["params"] == 4 * 3 * 3 * 3 + 4 * 4 * 3 * 3 + 16 * 10


def test_two_inputs_with_override_and_batch():
    # image [N,3,8,8] gets --batch 2; side input 'feat' [N,5] is overridden to 2x5
    nodes = [
        helper.make_node("Conv", ["image", "W"], ["c"], name="conv"),
        helper.make_node("Gemm", ["feat", "Wf"], ["g"], name="fc", transB=1),
    ]
    inits = [init("W", [4, 3, 3, 3]), init("Wf", [7, 5])]
    model = make_model(nodes, [vi("image", ["N", 3, 8, 8]), vi("feat", ["N", 5])], [out("c"), out("g")], inits)
    r = stats_of(model, batch=2, input_shapes={"feat": (2, 5)})
    assert row(r, "conv").macs == 2 * 4 * 6 * 6 * 3 * 3 * 3
    assert row(r, "fc").macs == 2 * 7 * 5
    assert row(r, "fc").cpr == 2


def test_ceil_mode_pool_shapes_follow_onnxruntime():
    """A ceil_mode window that would start in the end padding is dropped (onnxruntime, ONNX's
    reference and PyTorch agree); onnx's shape inference keeps it, so cnncli corrects it."""
    import numpy as np
    import onnxruntime as ort
    from onnx import helper

    from cnncli.frontend.graph import analyse

    pool = dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1], ceil_mode=1)
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], **pool),
        helper.make_node("AveragePool", ["p"], ["q"], **pool),
        helper.make_node("Relu", ["q"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", 1, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    g = analyse(model)
    # 8 → ceil((8+1−2)/2)+1 = 5 windows, the 5th starts at 8 = past the input: 4; then 4 → 2
    assert g.shape("p") == (1, 1, 4, 4)
    assert g.shape("q") == (1, 1, 2, 2) and g.shape("y") == (1, 1, 2, 2)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"x": np.zeros((1, 1, 8, 8), np.float32)})[0].shape == (1, 1, 2, 2)
