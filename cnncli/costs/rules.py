"""Per-op cost rules: multiply-accumulates (MACs), other FLOPs, and which inputs are weights.

One small function per op family, registered in ``COSTS`` (a :class:`cnncli.registry.Registry`). Each takes a :class:`NodeView`
and returns a :class:`Cost`; ``None`` fields mean "cannot be costed" (unknown shapes).
The per-element rules for ``flops_other`` are documented in README ("What the numbers mean").
This module holds the CNN core (convs, matmuls, pooling, normalisation, elementwise ops) and the
lookups; ``standard.py`` the rest of the standard domain, ``recurrent.py`` LSTM/GRU/RNN,
``quantized.py`` the quantized layers and the com.microsoft ops (``MS_COSTS``).
"""

from __future__ import annotations

import math

from cnncli.costs import quantized, recurrent, standard  # noqa: F401  (they register their rules)
from cnncli.costs.base import (  # noqa: F401  (re-exported: the names other modules use)
    COSTS, MS_COSTS, UNKNOWN, Cost, NodeView, Slots, conv_macs, gemm_macs, matmul_macs, per_in, per_out,
    set_slots, zero,
)
from cnncli.frontend.graph import numel


def _conv(v: NodeView) -> Cost:
    macs = conv_macs(v)
    if macs is None:
        return UNKNOWN
    return Cost(macs, v.out_numel() if len(v.inputs) > 2 and v.inputs[2] else 0)


def _conv_transpose(v: NodeView) -> Cost:
    x, w, y = v.in_numel(0), v.in_numel(1), v.out_numel()
    if x is None or w is None or y is None or not v.ins[1]:
        return UNKNOWN
    cin = v.ins[1][0]
    macs = x * (w // cin) if cin else 0  # N·Cin·Hin·Win · (Cout/g)·kh·kw: every input pixel, once
    bias = y if len(v.inputs) > 2 and v.inputs[2] else 0
    return Cost(macs, bias)


def _gemm(v: NodeView) -> Cost:
    macs = gemm_macs(v)
    if macs is None:
        return UNKNOWN
    return Cost(macs, v.out_numel() if len(v.inputs) > 2 and v.inputs[2] else 0)


def _matmul(v: NodeView) -> Cost:
    macs = matmul_macs(v)
    return UNKNOWN if macs is None else Cost(macs, 0)


def _einsum(v: NodeView) -> Cost:
    """The product of every index's size (an ellipsis: the broadcast dims it stands for)."""
    eq = v.attrs.get("equation", "").replace(" ", "")
    lhs = eq.split("->")[0].split(",")
    if len(lhs) != len(v.ins) or any(s is None or None in s for s in v.ins):
        return UNKNOWN
    sizes: dict[str, int] = {}
    for letters, shape in zip(lhs, v.ins):
        if "..." in letters:
            head, tail = letters.split("...", 1)
            extra = len(shape) - len(head) - len(tail)
            if extra < 0:
                return UNKNOWN
            for k, d in enumerate(shape[len(head):len(head) + extra]):  # right-aligned, broadcast
                key = f"...{extra - k}"
                sizes[key] = max(sizes.get(key, 1), d)
            letters, shape = head + tail, tuple(shape[:len(head)]) + tuple(shape[len(head) + extra:])
        if len(letters) != len(shape):
            return UNKNOWN
        sizes.update(zip(letters, shape))
    total = math.prod(sizes.values())
    if len(v.ins) == 1:
        return Cost(0, total)
    return Cost(total * (len(v.ins) - 1), 0)


def _variadic(v: NodeView) -> Cost:
    n = v.out_numel()
    inputs = sum(1 for i in v.inputs if i)
    return UNKNOWN if n is None else Cost(0, n * max(inputs - 1, 1))


def _pool(v: NodeView) -> Cost:
    n = v.out_numel()
    k = v.attrs.get("kernel_shape")
    return UNKNOWN if n is None or not k else Cost(0, n * math.prod(k))


def _lrn(v: NodeView) -> Cost:
    n = v.out_numel()
    return UNKNOWN if n is None else Cost(0, n * (int(v.attrs.get("size", 1)) + 3))


def _resize(v: NodeView) -> Cost:
    x, y = v.ins[0], v.outs[0]
    if x is None or y is None or None in x or None in y:
        return UNKNOWN
    mode = v.attrs.get("mode", "nearest")
    resized = sum(1 for a, b in zip(x, y) if a != b)
    per = {"nearest": 0, "linear": 2**resized, "bilinear": 2**resized, "cubic": 4**resized}.get(mode, 2**resized)
    return Cost(0, per * numel(y))


def _subgraph(v: NodeView) -> Cost:
    return UNKNOWN  # If/Loop/Scan: bodies are data-dependent; see README


UNARY = (
    "Relu LeakyRelu PRelu Elu Selu Celu Sigmoid HardSigmoid HardSwish Tanh Softplus Softsign Mish "
    "Gelu Swish Erf Exp Log Sqrt Reciprocal Neg Abs Ceil Floor Round Sign Sin Cos Tan Asin Acos Atan Sinh "
    "Cosh Asinh Acosh Atanh ThresholdedRelu Clip Not IsNaN IsInf Shrink QuantizeLinear "
    "DequantizeLinear Where"
).split()
VARIADIC = (
    "Add Sub Mul Div Pow Max Min Sum Mean Mod And Or Xor Equal Greater Less GreaterOrEqual LessOrEqual BitShift"
).split()
REDUCE = (
    "GlobalAveragePool GlobalMaxPool GlobalLpPool ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd "
    "ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceSumSquare ArgMax ArgMin TopK"
).split()
# data movement and bookkeeping: no arithmetic, no row unless they hold weights
ZERO_COST = frozenset(
    (
        "Reshape Flatten Squeeze Unsqueeze Transpose Concat Split Slice Pad Identity Dropout Cast CastLike "
        "Gather GatherElements GatherND Shape Size Constant ConstantOfShape Tile Expand DepthToSpace "
        "SpaceToDepth Range NonZero ScatterElements ScatterND OneHot EyeLike Compress Trilu"
    ).split()
)

for _ops, _rule in (
    (("Conv",), _conv),
    (("ConvTranspose",), _conv_transpose),
    (("Gemm",), _gemm),
    (("MatMul",), _matmul),
    (("Einsum",), _einsum),
    (("MaxPool", "AveragePool", "LpPool"), _pool),
    (("LRN",), _lrn),
    (("BatchNormalization",), per_out(2)),
    (("InstanceNormalization", "LayerNormalization", "GroupNormalization"), per_out(5)),
    (("Softmax", "LogSoftmax"), per_out(3)),
    (("Hardmax",), per_out(1)),
    (("Resize", "Upsample"), _resize),
    (("If", "Loop", "Scan"), _subgraph),
    (UNARY, per_out(1)),
    (VARIADIC, _variadic),
    (REDUCE, per_in()),
    (ZERO_COST, zero),
):
    COSTS.register(*_ops)(_rule)

# elementwise arithmetic: a constant operand of more than one element is a folded scale or
# bias (a weight); a one-element one (GELU's 1/sqrt(2), 0.5 and 1) is configuration
ELEMENTWISE_ARITHMETIC = ("Add", "Sub", "Mul", "Div", "Sum")  # Pow, Max, Min, ...: constants never params

for _ops, _slots in (
    (("Conv", "ConvTranspose"), Slots(weight=(1,), extra=(2,))),
    (("Gemm",), Slots(weight=(0, 1), extra=(2,))),
    (("MatMul",), Slots(weight=(0, 1))),
    (("Einsum",), Slots(weight=tuple(range(8)))),
    (("BatchNormalization",), Slots(extra=(1, 2), buffer=(3, 4))),
    (("InstanceNormalization", "LayerNormalization", "GroupNormalization"), Slots(extra=(1, 2))),
    (("PRelu",), Slots(extra=(1,))),
    (ELEMENTWISE_ARITHMETIC, Slots(every_input=True, scalar_is_config=True)),
    (("Concat",), Slots(every_input=True)),
):
    set_slots(COSTS, _ops, _slots)
UNKNOWN_OP_SLOTS = Slots(every_input=True)
NO_SLOTS = Slots()


def slots_for(op: str) -> Slots:
    slots = COSTS.fact(op, "slots") or MS_COSTS.fact(op, "slots")
    if slots is not None:
        return slots
    return NO_SLOTS if op in COSTS or op in MS_COSTS else UNKNOWN_OP_SLOTS


# ops with a rule that can never cost them (data-dependent subgraph bodies): reported as unknown
UNCOSTED = frozenset({"If", "Loop", "Scan"})
MS_DOMAIN = "com.microsoft"


def known_op(op: str, domain: str) -> bool:
    if domain in ("", "ai.onnx"):
        return op in COSTS and op not in UNCOSTED
    return domain == MS_DOMAIN and op in MS_COSTS


def cost(view: NodeView) -> Cost:
    domain = view.domain
    if domain in ("", "ai.onnx"):
        rule = COSTS.get(view.op)
    else:
        rule = MS_COSTS.get(view.op) if domain == MS_DOMAIN else None
    return UNKNOWN if rule is None else rule(view)
