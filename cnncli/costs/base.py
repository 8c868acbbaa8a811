"""What every cost rule module shares: the :class:`Cost` a rule returns, the :class:`NodeView` it
reads, the registries it registers in (``COSTS`` for the ONNX standard domain, ``MS_COSTS`` for
the ``com.microsoft`` ops onnxruntime's quantizer and optimizer write) and the :class:`Slots`
that say which inputs are params."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Iterable

import onnx

from cnncli.frontend.graph import Graph, NodeInfo, Shape, attrs, node_table, numel
from cnncli.registry import Registry


@dataclass(frozen=True)
class Cost:
    macs: int | None = 0
    flops_other: int | None = 0
    int8: bool = False  # the MACs multiply 8-bit integers (totals.macs_int8)


UNKNOWN = Cost(None, None)
ZERO = Cost(0, 0)

COSTS = Registry("cost rule")  # op type -> rule(NodeView) -> Cost; its "slots" fact: which inputs are params
MS_COSTS = Registry("com.microsoft cost rule")  # the same, for domain com.microsoft


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

    def has(self, i: int) -> bool:
        """Whether optional input ``i`` is given."""
        return len(self.inputs) > i and bool(self.inputs[i])

    def shape(self, i: int) -> tuple[int, ...] | None:
        """Input ``i``'s shape when every dim is known."""
        s = self.ins[i] if i < len(self.ins) else None
        return None if s is None or None in s else tuple(s)

    def const_value(self, i: int):
        """The value of constant input ``i`` when the model holds it (small tensors), else None."""
        ref = self.graph.consts.get(self.inputs[i]) if self.has(i) else None
        return None if ref is None else ref.value


def per_out(factor: int) -> Callable[[NodeView], Cost]:
    """``factor`` other FLOPs per output element."""
    def rule(v: NodeView) -> Cost:
        n = v.out_numel()
        return UNKNOWN if n is None else Cost(0, factor * n)

    return rule


def per_in(factor: int = 1) -> Callable[[NodeView], Cost]:
    """``factor`` other FLOPs per element of the first input."""
    def rule(v: NodeView) -> Cost:
        n = v.in_numel(0)
        return UNKNOWN if n is None else Cost(0, factor * n)

    return rule


def zero(v: NodeView) -> Cost:
    return ZERO


# Which constant inputs are learnable parameters. weight: the multiplied tensor (CPR divides
# by it); extra: other params (biases, affine scales); buffer: running statistics.
@dataclass(frozen=True)
class Slots:
    weight: tuple[int, ...] = ()
    extra: tuple[int, ...] = ()
    buffer: tuple[int, ...] = ()
    every_input: bool = False  # all inputs are param slots (elementwise with a constant)
    scalar_is_config: bool = False  # a one-element constant operand is configuration, not a weight
    integer: bool = False  # quantized layers: integer weights and biases are params too


def set_slots(registry: Registry, ops: Iterable[str], slots: Slots) -> None:
    for op in ops:
        registry.facts.setdefault(op, {})["slots"] = slots


def conv_macs(v: NodeView, w: int = 1) -> int | None:
    """N·Cout·Hout·Wout · (Cin/g)·kh·kw, the weight at input ``w`` (Cout 0: nothing)."""
    y, n = v.out_numel(), v.in_numel(w)
    if y is None or n is None or not v.ins[w]:
        return None
    cout = v.ins[w][0]
    return y * (n // cout) if cout else 0


def matmul_macs(v: NodeView, a: int = 0, transposed: bool = False) -> int | None:
    """Every output element is a dot product of length K (A's last dim, or its second last when
    ``transposed``)."""
    s, y = v.ins[a] if a < len(v.ins) else None, v.out_numel()
    k = None if not s or len(s) < (2 if transposed else 1) else s[-2 if transposed else -1]
    return None if y is None or k is None else y * k


def gemm_macs(v: NodeView, a: int = 0) -> int | None:
    """M·K·N of a Gemm whose A is input ``a`` (transA honoured)."""
    s, n = v.shape(a), v.out_numel()
    if s is None or len(s) != 2 or n is None:
        return None
    return n * (s[0] if v.attrs.get("transA", 0) else s[1])


def opset(v: NodeView, domain: str = "") -> int:
    """The model's opset version for ``domain`` (the standard one by default)."""
    for o in v.graph.model.opset_import:
        if o.domain == domain or (not domain and o.domain == "ai.onnx"):
            return o.version
    return 0
