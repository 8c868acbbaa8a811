"""Per-op cost rules: multiply-accumulates (MACs), other FLOPs, and which inputs are weights.

One small function per op family, registered in ``COSTS`` (a :class:`cnncli.registry.Registry`). Each takes a :class:`NodeView`
and returns a :class:`Cost`; ``None`` fields mean "cannot be costed" (unknown shapes).
The per-element rules for ``flops_other`` are documented in README ("What the numbers mean").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import onnx

from cnncli.frontend.graph import Graph, NodeInfo, Shape, attrs, node_table, numel
from cnncli.registry import Registry


@dataclass(frozen=True)
class Cost:
    macs: int | None = 0
    flops_other: int | None = 0


UNKNOWN = Cost(None, None)


class NodeView:
    """One node as the cost rules see it: its fields (a NodeInfo), and its input and output
    shapes. ``info`` is read from the node when not given."""

    __slots__ = ("node", "graph", "op", "domain", "inputs", "outputs", "ins", "outs", "__dict__")

    def __init__(self, node: onnx.NodeProto, graph: Graph, info: NodeInfo | None = None):
        if info is None:
            (info,) = node_table((node,))
        self.node, self.graph = node, graph
        self.op, self.domain, self.inputs, self.outputs = info.op, info.domain, info.inputs, info.outputs
        get = graph.shapes.get
        self.ins: list[Shape | None] = [get(i) if i else None for i in info.inputs]
        self.outs: list[Shape | None] = [get(o) if o else None for o in info.outputs]

    @cached_property
    def attrs(self) -> dict:
        """The node's attributes, read on first use (most rules, Conv's among them, never need them)."""
        return attrs(self.node)

    def out_numel(self, i: int = 0) -> int | None:
        return numel(self.outs[i]) if i < len(self.outs) else None

    def in_numel(self, i: int = 0) -> int | None:
        return numel(self.ins[i]) if i < len(self.ins) else None


def _mul(*xs: int | None) -> int | None:
    return None if any(x is None for x in xs) else math.prod(xs)


def _conv(v: NodeView) -> Cost:
    y, w = v.out_numel(), v.in_numel(1)
    if y is None or w is None or not v.ins[1]:
        return UNKNOWN
    cout = v.ins[1][0]
    macs = y * (w // cout) if cout else 0  # N·Cout·Hout·Wout · (Cin/g)·kh·kw (Cout 0: nothing)
    bias = y if len(v.inputs) > 2 and v.inputs[2] else 0
    return Cost(macs, bias)


def _conv_transpose(v: NodeView) -> Cost:
    x, w, y = v.in_numel(0), v.in_numel(1), v.out_numel()
    if x is None or w is None or y is None or not v.ins[1]:
        return UNKNOWN
    cin = v.ins[1][0]
    macs = x * (w // cin) if cin else 0  # N·Cin·Hin·Win · (Cout/g)·kh·kw: every input pixel, once
    bias = y if len(v.inputs) > 2 and v.inputs[2] else 0
    return Cost(macs, bias)


def _gemm(v: NodeView) -> Cost:
    a, y = v.ins[0], v.outs[0]
    if a is None or y is None or None in a or len(a) != 2:
        return UNKNOWN
    k = a[0] if v.attrs.get("transA", 0) else a[1]
    n = numel(y)
    if n is None:  # the output's dims not all known
        return UNKNOWN
    extra = n if len(v.inputs) > 2 and v.inputs[2] else 0
    return Cost(n * k, extra)


def _matmul(v: NodeView) -> Cost:
    a, y = v.ins[0], v.out_numel()
    if a is None or y is None or not a or a[-1] is None:
        return UNKNOWN
    return Cost(y * a[-1], 0)  # every output element is a dot product of length K


def _einsum(v: NodeView) -> Cost:
    eq = v.attrs.get("equation", "").replace(" ", "")
    lhs = eq.split("->")[0].split(",")
    if "..." in eq or len(lhs) != len(v.ins) or any(s is None or None in s for s in v.ins):
        return UNKNOWN
    sizes: dict[str, int] = {}
    for letters, shape in zip(lhs, v.ins):
        if len(letters) != len(shape):
            return UNKNOWN
        sizes.update(zip(letters, shape))
    total = math.prod(sizes.values())
    if len(v.ins) == 1:
        return Cost(0, total)
    return Cost(total * (len(v.ins) - 1), 0)


def _per_out(factor: int) -> Callable[[NodeView], Cost]:
    def rule(v: NodeView) -> Cost:
        n = v.out_numel()
        return UNKNOWN if n is None else Cost(0, factor * n)

    return rule


def _variadic(v: NodeView) -> Cost:
    n = v.out_numel()
    inputs = sum(1 for i in v.inputs if i)
    return UNKNOWN if n is None else Cost(0, n * max(inputs - 1, 1))


def _per_in(v: NodeView) -> Cost:
    n = v.in_numel(0)
    return UNKNOWN if n is None else Cost(0, n)


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
    "Gelu Erf Exp Log Sqrt Reciprocal Neg Abs Ceil Floor Round Sign Sin Cos Tan Asin Acos Atan Sinh "
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

COSTS = Registry("cost rule")  # op type -> rule(NodeView) -> Cost; its "slots" fact: which inputs are params


def _zero(v: NodeView) -> Cost:
    return Cost(0, 0)


for _ops, _rule in (
    (("Conv",), _conv),
    (("ConvTranspose",), _conv_transpose),
    (("Gemm",), _gemm),
    (("MatMul",), _matmul),
    (("Einsum",), _einsum),
    (("MaxPool", "AveragePool", "LpPool"), _pool),
    (("LRN",), _lrn),
    (("BatchNormalization",), _per_out(2)),
    (("InstanceNormalization", "LayerNormalization", "GroupNormalization"), _per_out(5)),
    (("Softmax", "LogSoftmax"), _per_out(3)),
    (("Hardmax",), _per_out(1)),
    (("Resize", "Upsample"), _resize),
    (("If", "Loop", "Scan"), _subgraph),
    (UNARY, _per_out(1)),
    (VARIADIC, _variadic),
    (REDUCE, _per_in),
    (ZERO_COST, _zero),
):
    COSTS.register(*_ops)(_rule)

# elementwise arithmetic: a constant operand of more than one element is a folded scale or
# bias (a weight); a one-element one (GELU's 1/sqrt(2), 0.5 and 1) is configuration
ELEMENTWISE_ARITHMETIC = ("Add", "Sub", "Mul", "Div", "Sum")  # Pow, Max, Min, ...: constants never params

# Which constant inputs are learnable parameters. weight: the multiplied tensor (CPR divides
# by it); extra: other params (biases, affine scales); buffer: running statistics.
@dataclass(frozen=True)
class Slots:
    weight: tuple[int, ...] = ()
    extra: tuple[int, ...] = ()
    buffer: tuple[int, ...] = ()
    every_input: bool = False  # all inputs are param slots (elementwise with a constant)
    scalar_is_config: bool = False  # a one-element constant operand is configuration, not a weight


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
    for _op in _ops:
        COSTS.facts.setdefault(_op, {})["slots"] = _slots
# recurrent layers have no cost rule yet (their rows are unknown), but their weights are params
RECURRENT_SLOTS = {op: Slots(weight=(1, 2), extra=(3,)) for op in ("LSTM", "GRU", "RNN")}
UNKNOWN_OP_SLOTS = Slots(every_input=True)
NO_SLOTS = Slots()


def slots_for(op: str) -> Slots:
    slots = COSTS.fact(op, "slots") or RECURRENT_SLOTS.get(op)
    if slots is not None:
        return slots
    return NO_SLOTS if op in COSTS else UNKNOWN_OP_SLOTS


# ops with a rule that can never cost them (data-dependent subgraph bodies): reported as unknown
UNCOSTED = frozenset({"If", "Loop", "Scan"})


def known_op(op: str, domain: str) -> bool:
    if domain not in ("", "ai.onnx") or op in UNCOSTED:
        return False
    return op in COSTS


def cost(view: NodeView) -> Cost:
    rule = COSTS.get(view.op) if view.domain in ("", "ai.onnx") else None
    return UNKNOWN if rule is None else rule(view)


