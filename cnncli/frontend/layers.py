"""The one numbering of layers every command shares: "layer N" is the N-th Conv of the standard
domain in graph order (`cnn stats`'s ``#`` column, ``--layer`` of project, top, features and
filters). A Conv of another domain (com.microsoft's fused ones, a custom op) is not numbered."""

from __future__ import annotations

STANDARD_DOMAINS = ("", "ai.onnx")


def is_numbered(op: str, domain: str) -> bool:
    """Does a node of this op type and domain get a layer number?"""
    return op == "Conv" and domain in STANDARD_DOMAINS


def numbered_nodes(nodes) -> list:
    """The nodes that get layer numbers, in order: layer N is element N - 1."""
    return [n for n in nodes if is_numbered(n.op_type, n.domain)]
