"""The rule table: one small function per op type, registered with :func:`register`.

A rule gets the builder, the forward node, its attributes and the signals arriving at its outputs
(None where no signal arrives), and returns {forward input name: signal for it}. A rule that
reads the value of some of its inputs at build time (starts, pads, axes, bounds, indices) names
their slots in ``values``: the builder finds those values before any rule runs (one forward run
for all that the model does not store).
"""

from __future__ import annotations

from typing import Callable

import onnx

Rule = Callable[..., dict]
RULES: dict[str, Rule] = {}
VALUE_SLOTS: dict[str, tuple[int, ...]] = {}


def register(*op_types: str, values: tuple[int, ...] = ()) -> Callable[[Rule], Rule]:
    def add(rule: Rule) -> Rule:
        for op in op_types:
            if op in RULES:
                raise ValueError(f"two reverse rules for {op}")
            RULES[op] = rule
            VALUE_SLOTS[op] = values
        return rule

    return add


def value_inputs(node: onnx.NodeProto) -> list[str]:
    """The inputs of ``node`` whose values its rule reads at build time."""
    slots = VALUE_SLOTS.get(node.op_type, ())
    return [node.input[s] for s in slots if s < len(node.input) and node.input[s]]
