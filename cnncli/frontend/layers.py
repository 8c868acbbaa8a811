"""The one numbering of layers every command shares: "layer N" is the N-th convolution of the
standard domain in graph order (`cnn stats`'s ``#`` column, ``--layer`` of project, top, features
and filters): a Conv, or its quantized forms ConvInteger (onnxruntime's dynamic quantization) and
QLinearConv (its QOperator format). A Conv of another domain (com.microsoft's fused ones, a
custom op) is not numbered."""

from __future__ import annotations

STANDARD_DOMAINS = ("", "ai.onnx")
# the numbered convolutions and the input slot of each one's weight
CONV_WEIGHT_SLOT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}


def is_numbered(op: str, domain: str) -> bool:
    """Does a node of this op type and domain get a layer number?"""
    return op in CONV_WEIGHT_SLOT and domain in STANDARD_DOMAINS


def weight_input(node) -> str:
    """The name of a numbered conv's weight input."""
    return node.input[CONV_WEIGHT_SLOT[node.op_type]]


def numbered_nodes(nodes) -> list:
    """The nodes that get layer numbers, in order: layer N is element N - 1."""
    return [n for n in nodes if is_numbered(n.op_type, n.domain)]
