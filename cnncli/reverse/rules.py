"""The rule table: one small function per op type, registered with :func:`register`.

A rule gets the builder, the forward node, its attributes and the signals arriving at its outputs
(None where no signal arrives), and returns {forward input name: signal for it}.
"""

from __future__ import annotations

from typing import Callable

Rule = Callable[..., dict]
RULES: dict[str, Rule] = {}


def register(*op_types: str) -> Callable[[Rule], Rule]:
    def add(rule: Rule) -> Rule:
        for op in op_types:
            if op in RULES:
                raise ValueError(f"two reverse rules for {op}")
            RULES[op] = rule
        return rule

    return add
