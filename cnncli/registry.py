"""One shape for every per-op table: a :class:`Registry` per concern (cost rule, fold evaluator,
reverse rule) maps an ONNX op type to the function that handles it, with optional per-op facts
(which input slots are weights, which values a rule reads). ``tests/test_op_registries.py`` lists
every op each registry knows and checks that the concerns agree."""

from __future__ import annotations

from typing import Any, Callable


class Registry(dict):
    """op type -> rule for one concern (a dict, so the hot loops look rules up at dict speed).

    >>> COSTS = Registry("cost rule")
    >>> @COSTS.register("Relu", "Sigmoid")
    ... def unary(view): ...
    """

    def __init__(self, concern: str):
        super().__init__()
        self.concern = concern
        self.facts: dict[str, dict[str, Any]] = {}  # op -> per-op facts given at registration

    def register(self, *ops: str, **facts: Any) -> Callable[[Callable], Callable]:
        """Register the decorated function for ``ops``; a second rule for one op is an error."""

        def add(rule: Callable) -> Callable:
            for op in ops:
                if op in self:
                    raise ValueError(f"two {self.concern}s for {op}")
                self[op] = rule
                if facts:
                    self.facts[op] = dict(facts)
            return rule

        return add

    def fact(self, op: str, key: str, default: Any = None) -> Any:
        return self.facts.get(op, {}).get(key, default)
