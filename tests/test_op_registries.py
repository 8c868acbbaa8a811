"""The per-op tables agree: every op with a reverse rule has a cost rule, every op with a cost rule
has a reverse rule or is listed as carrying no signal (NO_SIGNAL) or as still waiting for a rule
(NOT_YET), every op the folding evaluates is costed, and every op named anywhere is a real op of
the ONNX standard."""

from __future__ import annotations

import onnx
import pytest

from cnncli.costs.rules import COSTS, slots_for
from cnncli.frontend.fold import EVAL
from cnncli.registry import Registry
from cnncli.reverse import RULES
from cnncli.reverse.rules import NO_SIGNAL, NOT_YET

STANDARD = {s.name for s in onnx.defs.get_all_schemas_with_history() if s.domain in ("", "ai.onnx")}


def test_each_concern_is_one_registry():
    for table in (COSTS, EVAL, RULES):
        assert isinstance(table, Registry) and len(table) > 20


def test_every_reverse_rule_has_a_cost_rule():
    assert sorted(set(RULES) - set(COSTS)) == []


def test_every_cost_rule_has_a_reverse_rule_or_says_why_not():
    without = set(COSTS) - set(RULES)
    assert sorted(without - (NO_SIGNAL | NOT_YET)) == [], "a cost rule without a reverse rule and no reason"
    assert sorted((NO_SIGNAL | NOT_YET) - without) == [], "listed as without a reverse rule, but it has one or no cost rule"
    assert NO_SIGNAL & NOT_YET == set()


def test_every_folded_op_is_costed():
    assert sorted(set(EVAL) - set(COSTS)) == []


@pytest.mark.parametrize("name", ["COSTS", "EVAL", "RULES", "NO_SIGNAL", "NOT_YET"])
def test_every_op_named_is_a_standard_op(name):
    ops = {"COSTS": COSTS, "EVAL": EVAL, "RULES": RULES, "NO_SIGNAL": NO_SIGNAL, "NOT_YET": NOT_YET}[name]
    assert sorted(set(ops) - STANDARD) == []


def test_a_second_rule_for_one_op_is_refused():
    table = Registry("test rule")
    table.register("Relu")(lambda: None)
    with pytest.raises(ValueError, match="two test rules for Relu"):
        table.register("Relu")(lambda: None)


def test_param_slots_are_facts_of_the_cost_registry():
    assert slots_for("Conv").weight == (1,) and slots_for("Conv").extra == (2,)
    assert slots_for("BatchNormalization").buffer == (3, 4)
    assert slots_for("Relu").weight == () and not slots_for("Relu").every_input
    assert slots_for("com.example.Mystery").every_input  # an unknown op: every float constant is a param


# how much of the standard domain each registry covers today: a floor, raised as rules are added,
# so a rule that is lost (a module no longer imported, a renamed op) fails here
FLOORS = {"cost rules": 185, "fold evaluators": 51, "reverse rules": 137}


def test_coverage_does_not_drop():
    tables = {"cost rules": COSTS, "fold evaluators": EVAL, "reverse rules": RULES}
    covered = {name: len(set(table) & STANDARD) for name, table in tables.items()}
    print({name: f"{n} of {len(STANDARD)}" for name, n in covered.items()})
    assert all(covered[name] >= FLOORS[name] for name in FLOORS), covered
