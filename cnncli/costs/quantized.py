"""Cost rules for quantized layers: the standard domain's QLinearConv, QLinearMatMul, ConvInteger
and MatMulInteger, and the com.microsoft ops onnxruntime's quantizer and optimizer write
(QLinear* elementwise ops, DynamicQuantizeMatMul, MatMulIntegerToFloat, QGemm, FusedConv,
FusedGemm, FusedMatMul, Gelu and friends, SkipLayerNormalization).

The MACs of a layer that multiplies two 8-bit integer tensors are marked ``int8`` (they make up
``totals.macs_int8``). Its integer weights and biases are params, in their stored dtype; scales
and zero points are configuration."""

from __future__ import annotations

from cnncli.costs.base import (
    COSTS, MS_COSTS, UNKNOWN, Cost, NodeView, Slots, conv_macs, gemm_macs, matmul_macs, per_out,
    set_slots, zero,
)
from cnncli.frontend.graph import numel

EIGHT_BIT = frozenset({2, 3})  # onnx.TensorProto.UINT8, INT8


def _is_8bit(v: NodeView, *slots: int) -> bool:
    types = v.graph.types
    return all(types.get(v.inputs[s]) in EIGHT_BIT for s in slots if v.has(s))


def _requantized(macs: int | None, v: NodeView, operands: tuple[int, int], bias: int | None,
                 requant: int = 1) -> Cost:
    """MACs of integer operands ``operands``; per output element ``requant`` FLOPs (the output's
    scale, zero point and rounding) and a bias add when input ``bias`` is given."""
    y = v.out_numel()
    if macs is None or y is None:
        return UNKNOWN
    extra = requant + (1 if bias is not None and v.has(bias) else 0)
    return Cost(macs, y * extra, _is_8bit(v, *operands))


@COSTS.register("QLinearConv")
def _qlinear_conv(v: NodeView) -> Cost:
    return _requantized(conv_macs(v, 3), v, (0, 3), 8)


@COSTS.register("QLinearMatMul")
def _qlinear_matmul(v: NodeView) -> Cost:
    return _requantized(matmul_macs(v), v, (0, 3), None)


@COSTS.register("ConvInteger")
def _conv_integer(v: NodeView) -> Cost:
    return _requantized(conv_macs(v), v, (0, 1), None, requant=0)  # int32 out: no rescaling


@COSTS.register("MatMulInteger")
def _matmul_integer(v: NodeView) -> Cost:
    return _requantized(matmul_macs(v), v, (0, 1), None, requant=0)


set_slots(COSTS, ("QLinearConv",), Slots(weight=(3,), extra=(8,), integer=True))
set_slots(COSTS, ("QLinearMatMul",), Slots(weight=(0, 3), integer=True))
set_slots(COSTS, ("ConvInteger", "MatMulInteger"), Slots(weight=(0, 1), integer=True))


# com.microsoft: onnxruntime's quantizer (quantize_dynamic, quantize_static) and optimizer
@MS_COSTS.register("DynamicQuantizeMatMul")
def _dynamic_quantize_matmul(v: NodeView) -> Cost:
    """A is quantized at run time (3 per element of A, as DynamicQuantizeLinear), then an 8-bit
    matmul, rescaled (1 per output) and biased."""
    macs, a = matmul_macs(v), v.in_numel(0)
    cost = _requantized(macs, v, (1,), 4)
    if cost.macs is None or a is None:
        return UNKNOWN
    return Cost(cost.macs, cost.flops_other + 3 * a, cost.int8)


@MS_COSTS.register("MatMulIntegerToFloat")
def _matmul_integer_to_float(v: NodeView) -> Cost:
    return _requantized(matmul_macs(v), v, (0, 1), 6)


@MS_COSTS.register("QGemm")
def _qgemm(v: NodeView) -> Cost:
    return _requantized(gemm_macs(v), v, (0, 3), 6)


@MS_COSTS.register("FusedConv")
def _fused_conv(v: NodeView) -> Cost:
    """Conv, its bias, the residual Z (1 per output each, when given) and the activation (1)."""
    macs, y = conv_macs(v), v.out_numel()
    if macs is None or y is None:
        return UNKNOWN
    return Cost(macs, y * (1 + v.has(2) + v.has(3)))


@MS_COSTS.register("FusedGemm")
def _fused_gemm(v: NodeView) -> Cost:
    macs, y = gemm_macs(v), v.out_numel()
    return UNKNOWN if macs is None or y is None else Cost(macs, y * (1 + v.has(2)))


@MS_COSTS.register("FusedMatMul")
def _fused_matmul(v: NodeView) -> Cost:
    macs = matmul_macs(v, 0, bool(v.attrs.get("transA", 0)))
    if macs is None:
        return UNKNOWN
    return Cost(macs, 0 if float(v.attrs.get("alpha", 1.0)) == 1.0 else v.out_numel())


@MS_COSTS.register("SkipLayerNormalization", "SkipSimplifiedLayerNormalization")
def _skip_layer_norm(v: NodeView) -> Cost:
    """The skip add (1), the bias add (1, when given), then LayerNormalization (5)."""
    y = v.out_numel()
    return UNKNOWN if y is None else Cost(0, y * (6 + v.has(4)))


@MS_COSTS.register("QLinearGlobalAveragePool", "QLinearReduceMean")
def _qlinear_reduce(v: NodeView) -> Cost:
    x = v.in_numel(0)
    return UNKNOWN if x is None else Cost(0, x)


@MS_COSTS.register("QLinearAveragePool")
def _qlinear_pool(v: NodeView) -> Cost:
    y, k = v.out_numel(), v.attrs.get("kernel_shape")
    return UNKNOWN if y is None or not k else Cost(0, y * numel(k))


for _ops, _rule in (
    (("QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "Gelu", "FastGelu", "QuickGelu",
      "QuantizeLinear", "DequantizeLinear"), per_out(1)),
    (("BiasGelu",), per_out(2)),  # the bias add, then Gelu
    (("QLinearSoftmax",), per_out(3)),
    (("QLinearConcat",), zero),
):
    MS_COSTS.register(*_ops)(_rule)

set_slots(MS_COSTS, ("DynamicQuantizeMatMul",), Slots(weight=(1,), extra=(4,), integer=True))
set_slots(MS_COSTS, ("MatMulIntegerToFloat",), Slots(weight=(0, 1), extra=(6,), integer=True))
set_slots(MS_COSTS, ("QGemm",), Slots(weight=(0, 3), extra=(6,), integer=True))
set_slots(MS_COSTS, ("QLinearAdd", "QLinearMul"), Slots(extra=(0, 3), integer=True, scalar_is_config=True))
set_slots(MS_COSTS, ("FusedConv",), Slots(weight=(1,), extra=(2,)))
set_slots(MS_COSTS, ("FusedGemm",), Slots(weight=(0, 1), extra=(2,)))
set_slots(MS_COSTS, ("FusedMatMul",), Slots(weight=(0, 1)))
set_slots(MS_COSTS, ("FastGelu", "BiasGelu"), Slots(extra=(1,)))
set_slots(MS_COSTS, ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization"), Slots(extra=(2, 3, 4)))
