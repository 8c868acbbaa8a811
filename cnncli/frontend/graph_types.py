"""The analysed graph's types: tensor shapes and element types, a node's fields read once
(``NodeInfo``), the model's constants (``ConstRef``) and the :class:`Graph` that
``cnncli.frontend.graph.analyse`` returns and the cost rules, the receptive-field walk and the
reverse-graph builder read."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import onnx
from onnx import TensorProto

from cnncli.frontend.fold import tensor_value

Shape = tuple  # of int | None (None: unknown dim)

FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16})
_BITS = {
    TensorProto.FLOAT: 32, TensorProto.UINT8: 8, TensorProto.INT8: 8, TensorProto.UINT16: 16,
    TensorProto.INT16: 16, TensorProto.INT32: 32, TensorProto.INT64: 64, TensorProto.BOOL: 8,
    TensorProto.FLOAT16: 16, TensorProto.DOUBLE: 64, TensorProto.UINT32: 32, TensorProto.UINT64: 64,
    TensorProto.BFLOAT16: 16, TensorProto.COMPLEX64: 64, TensorProto.COMPLEX128: 128,
}
for _name in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0"):
    if hasattr(TensorProto, _name):
        _BITS[getattr(TensorProto, _name)] = 8
for _name in ("UINT4", "INT4", "FLOAT4E2M1"):
    if hasattr(TensorProto, _name):
        _BITS[getattr(TensorProto, _name)] = 4

# ops whose output is a weight when their first input is one (a weight seen through a cast or reshape)
PASSTHROUGH_CONST_OPS = frozenset(
    {"Identity", "Cast", "DequantizeLinear", "Reshape", "Unsqueeze", "Squeeze", "Transpose", "Flatten"}
)


def dtype_name(elem_type: int) -> str:
    if elem_type == TensorProto.FLOAT:
        return "float32"
    if elem_type == TensorProto.DOUBLE:
        return "float64"
    try:
        return TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"type{elem_type}"


def nbytes(numel: int, elem_type: int) -> int:
    return (numel * _BITS.get(elem_type, 32) + 7) // 8


def numel(shape: Shape | None) -> int | None:
    if shape is None or None in shape:  # dims are ints or None
        return None
    return math.prod(shape)


def attrs(node: onnx.NodeProto) -> dict:
    """A node's attributes as plain Python values (faster than onnx.helper for big graphs)."""
    out = {}
    for a in node.attribute:
        t = a.type
        if t == onnx.AttributeProto.INT:
            out[a.name] = a.i
        elif t == onnx.AttributeProto.INTS:
            out[a.name] = list(a.ints)
        elif t == onnx.AttributeProto.FLOAT:
            out[a.name] = a.f
        elif t == onnx.AttributeProto.FLOATS:
            out[a.name] = list(a.floats)
        elif t == onnx.AttributeProto.STRING:
            out[a.name] = a.s.decode("utf-8", "replace")
        elif t == onnx.AttributeProto.TENSOR:
            out[a.name] = a.t
        elif t == onnx.AttributeProto.GRAPH:
            out[a.name] = a.g
        else:
            out[a.name] = onnx.helper.get_attribute_value(a)
    return out


class NodeInfo(NamedTuple):
    """A node's fields as plain Python values, read once from the protobuf (every later walk
    over the graph reads these: reading a protobuf field costs far more than a tuple item)."""

    op: str
    domain: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    name: str


def node_table(nodes) -> list[NodeInfo]:
    return [NodeInfo(n.op_type, n.domain, tuple(n.input), tuple(n.output), n.name) for n in nodes]


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str


class ConstRef:
    """A tensor whose value is fixed by the model: an initializer, or produced from one.

    ``source``: the stored tensor it comes from (what params are counted by); ``numel`` and
    ``elem_type``: its size and storage type. ``value``: the numpy value when the tensor is
    small (at most ``FOLD_CAP`` elements, any dtype) and held in the model file, including every
    value constant folding worked out; None for weights (never read in) and external data.
    """

    __slots__ = ("source", "numel", "elem_type", "_value", "_tensor")

    def __init__(self, source: str, numel: int | None, elem_type: int, value: np.ndarray | None = None,
                 tensor: TensorProto | None = None):
        self.source = source
        self.numel = numel
        self.elem_type = elem_type
        self._value = value
        self._tensor = tensor  # decoded on first use of .value (most never are)

    @property
    def value(self) -> np.ndarray | None:
        if self._value is None and self._tensor is not None:
            self._value = tensor_value(self._tensor)
            self._tensor = None
        return self._value

    def with_value(self, value: np.ndarray) -> "ConstRef":
        return ConstRef(self.source, self.numel, self.elem_type, value)

    def __repr__(self) -> str:
        return f"ConstRef({self.source!r}, numel={self.numel}, elem_type={self.elem_type})"


@dataclass
class Graph:
    model: onnx.ModelProto
    inputs: list[InputSpec]
    shapes: dict[str, Shape]
    types: dict[str, int]
    consts: dict[str, ConstRef]
    nodes: list[onnx.NodeProto] = field(default_factory=list)  # every node, folded ones included
    # the nodes constant folding replaced by values: each one's name (when it has one) and its
    # output names
    folded: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)  # for the user (the CLI prints them)
    unresolved: str | None = None  # the first tensor whose shape stays unknown, if any
    info: list[NodeInfo] = field(default_factory=list)  # node_table(nodes), aligned with nodes

    def __post_init__(self):
        if len(self.info) != len(self.nodes):
            self.info = node_table(self.nodes)

    def shape(self, name: str) -> Shape | None:
        return self.shapes.get(name)

    def is_const(self, name: str) -> bool:
        return name in self.consts


def real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in graph.initializer}
    return [i for i in graph.input if i.name not in inits]
