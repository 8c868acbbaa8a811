"""cnncli's per-op rules against onnx's own node tests (tests/node_coverage.py): no reverse rule
disagrees with finite differences, coverage stays at or above the floors recorded here, and every
op cnncli has a rule for is exercised by some node test or is named below as having none.

`python tests/node_coverage.py` prints the table README shows; raise the floors when it rises.
"""

from __future__ import annotations

import re

import node_coverage as NC
import pytest
from helpers import REPO

from cnncli.costs.rules import COSTS, UNKNOWN
from cnncli.reverse import RULES

# ops covered (a case passes, none disagrees, the rule refuses the rest with a reason) as of
# 2026-12-07 06:18 UTC, out of 155 ops with a float-input case (cost) and 123 differentiable ones
OP_FLOORS = {"cost": 155, "reverse": 123}
# cases that pass, out of 1,050 costed and 740 checked against finite differences
CASE_FLOORS = {"cost": 1050, "reverse": 711}

# rules that disagree with finite differences on a node test: wrong results, reported in issue 16.
# Each is a failure the day it appears; listed here so the suite stays green until it is fixed,
# and the test fails when one of them starts to pass (take it off the list then).
KNOWN_WRONG: dict[str, str] = {}  # case -> why its rule is known to disagree with finite differences

# ops with a rule that no node test exercises, and why
NO_NODE_TEST = {
    "cost": {
        "GlobalLpPool": "onnx has no node test for it", "MaxRoiPool": "onnx has no node test for it",
        "If": "control flow: left out", "Loop": "control flow: left out", "Scan": "control flow: left out",
        **dict.fromkeys(("Multinomial", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike"),
                        "random: onnx has no node test data for it"),
    },
    "reverse": {
        "GlobalLpPool": "onnx has no node test for it", "MaxRoiPool": "onnx has no node test for it",
        "AffineGrid": "onnx's schema marks theta non-differentiable (tests/test_reverse_sampling.py checks it)",
        "Cast": "its node tests convert to or from non-float types or hold inf and NaN",
        "CastLike": "its node tests convert to or from non-float types or hold inf and NaN",
        "Trilu": "its node tests hold integers",
        "QuantizeLinear": "integer output",
        "DynamicQuantizeLinear": "integer output", "ConvInteger": "integer inputs", "MatMulInteger": "integer inputs",
        **dict.fromkeys(("DFT", "STFT"), "onnx's schema marks the signal non-differentiable (test_reverse_llm.py checks "
                                         "their node tests against finite differences)"),
        "Unique": "onnx's schema marks it non-differentiable; its node tests hold ties (reverse_models_llm.cache_copies)",
        "SwiGLU": "onnxruntime 1.32 cannot run it (test_reverse_llm.py checks it against numpy)",
    },
}


@pytest.fixture(scope="module")
def report():
    return NC.run()


def test_no_reverse_rule_disagrees_with_finite_differences(report):
    wrong = {case: f"{next(c.op for c in report.cases if c.name == case)}: {o.why}"
             for case, o in report.reverse.items() if o.status == "fail"}
    new = {case: why for case, why in wrong.items() if case not in KNOWN_WRONG}
    assert not new, f"reverse rules that disagree with finite differences (case: op: why): {new}"
    fixed = sorted(set(KNOWN_WRONG) - set(wrong))
    assert not fixed, f"these cases now pass: take them off KNOWN_WRONG: {fixed}"


def test_no_cost_rule_crashes(report):
    assert [case for case, o in report.cost.items() if o.status == "fail"] == []


def test_coverage_does_not_drop(report):
    figures = NC.figures(report)
    print("\n" + NC.table(report))
    for concern, floor in OP_FLOORS.items():
        assert figures[concern][0] >= floor, (concern, figures[concern], NC.gaps(report))
    for concern, floor in CASE_FLOORS.items():
        passing = sum(o.status == "pass" for o in getattr(report, concern).values())
        assert passing >= floor, (concern, passing, floor)


def test_the_readme_claims_no_more_than_is_covered(report):
    """README's table (pasted from `python tests/node_coverage.py`) never states more than holds."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    row = re.search(r"^\| all \| \d+ \| (\d+) / \d+ \| (\d+) / \d+ \|", readme, re.M)
    assert row, "README has no coverage table"
    figures = NC.figures(report)
    assert int(row[1]) <= figures["cost"][0] and int(row[2]) <= figures["reverse"][0], (row[0], figures)


@pytest.mark.parametrize("concern", ["cost", "reverse"])
def test_every_op_with_a_rule_is_exercised(report, concern):
    table = {"cost": COSTS, "reverse": RULES}[concern]
    outcomes = dict(getattr(report, concern), **(report.cost_other if concern == "cost" else {}))
    exercised = {c.op for c in report.cases if c.name in outcomes and outcomes[c.name].status != "skip"}
    assert sorted(set(table) - exercised - set(NO_NODE_TEST[concern])) == [], "ops with a rule and no node test"
    assert sorted(set(NO_NODE_TEST[concern]) & exercised) == [], "listed as without a node test, but has one"
    assert sorted(set(NO_NODE_TEST[concern]) - set(table)) == [], "listed, but has no rule"


def test_a_wrong_reverse_rule_is_caught(report, monkeypatch):
    """The harness is not blind: Sigmoid's rule made to double its signal fails every case."""
    right = RULES["Sigmoid"]

    def doubled(b, node, at, outs):
        return {k: b.op("Mul", [g, b.const(2.0)]) for k, g in right(b, node, at, outs).items()}

    monkeypatch.setitem(RULES, "Sigmoid", doubled)
    cases = [c for c in report.cases if c.op == "Sigmoid"]
    assert cases and all(NC.check_reverse(c).status == "fail" for c in cases)


def test_an_unknown_cost_is_caught(report, monkeypatch):
    monkeypatch.setitem(COSTS, "Conv", lambda view: UNKNOWN)
    cases = [c for c in report.cases if c.op == "Conv"]
    assert cases and all(NC.check_cost(c).status == "missing" for c in cases)
