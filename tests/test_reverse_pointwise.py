"""Reverse rules of the elementwise, variadic, softmax and Reduce* ops equal finite differences.

Each op runs in a small model (built with onnx.helper) whose input x feeds it directly or through a
Slice (for a second, broadcast operand that also carries the signal). The backprop projection of
channel c is the gradient of ½·Σ a_c² (test_reverse_fd's objective); it is checked against float32
central differences of onnxruntime runs of the model itself at ~30 positions and along a random
direction, with test_reverse_fd's step sizes and tolerance (1e-2 relative, plus 1e-2 of the largest
gradient per position). Every case runs at opset 13 and at the latest opset onnxruntime knows
(ops newer than 13 at their first opset instead of 13); Softmax/LogSoftmax and the Reduce ops also
at opset 11 (the 2-D coercion, axes as an attribute).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import reverse_models as RM
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnxruntime.capi import _pybind_state as ort_state
from test_reverse_fd import Objective, check_gradient

from cnncli.engine.project import Projector
from cnncli.errors import UnsupportedError
from cnncli.frontend.graph import analyse
from cnncli.reverse import RULES
from cnncli.reverse.rules import NO_SIGNAL, NOT_YET

LATEST = min(onnx.defs.onnx_opset_version(), max(
    k.version_range[0] for k in ort_state.get_all_opkernel_def() if k.domain in ("", "ai.onnx")))
SHAPE = (1, 3, 4, 5)


def _model(nodes, opset: int, inits=(), shape=SHAPE) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "pointwise", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="cnncli-tests")
    m.ir_version = 10 if opset > 19 else 9 if opset >= 19 else 8 if opset >= 13 else 7
    onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    return m


def _check(model: onnx.ModelProto, x: np.ndarray, channels=(0,)) -> None:
    """The backprop projection of each channel of y equals finite differences of ½·Σ y_c², and
    projecting the channels together gives what projecting each alone does."""
    case = RM.Case("pointwise", model, "y", x.shape, list(channels))
    projector = Projector(model, analyse(model), "x", "y", "backprop")
    rng = np.random.default_rng(5)
    for result in projector.project(x, list(channels), keep="map"):
        grad = result.projection.astype(np.float64)
        assert np.abs(grad).max() > 0, "a zero gradient: the check would be empty"
        check_gradient(Objective(case, result.channel), x, grad, rng, f"channel {result.channel}")
    back = projector.project(x, list(channels), keep="map")
    for c, together in zip(channels, back):
        np.testing.assert_allclose(projector.project(x, [c], keep="map")[0].projection, together.projection, rtol=1e-6, atol=1e-7)
    # deconvnet and guided are the same map outside the ReLU family
    for mode in ("deconvnet", "guided"):
        other = Projector(model, analyse(model), "x", "y", mode).project(x, list(channels), keep="map")
        for r0, r1 in zip(back, other):
            np.testing.assert_allclose(r1.projection, r0.projection, rtol=1e-5, atol=1e-6 * np.abs(r0.projection).max())


def _input(low: float = -2.0, high: float = 2.0, shape=SHAPE, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def _away_from(x: np.ndarray, points, gap: float = 0.05) -> np.ndarray:
    """x moved off kinks (|x − p| ≥ gap for each p), so finite differences measure one side."""
    for p in points:
        near = np.abs(x - p) < gap
        x = np.where(near, p + np.where(x >= p, gap, -gap) * 2, x).astype(np.float32)
    return x


# op, attributes, input range, first opset, kinks
UNARY = [
    ("Abs", {}, (-2, 2), 7, [0]), ("Acos", {}, (-0.8, 0.8), 7, []), ("Acosh", {}, (1.3, 3), 9, []),
    ("Asin", {}, (-0.8, 0.8), 7, []), ("Asinh", {}, (-2, 2), 9, []), ("Atan", {}, (-2, 2), 7, []),
    ("Atanh", {}, (-0.8, 0.8), 9, []), ("Cos", {}, (-3, 3), 7, []), ("Cosh", {}, (-2, 2), 9, []),
    ("Sin", {}, (-3, 3), 7, []), ("Sinh", {}, (-2, 2), 9, []), ("Tan", {}, (-1.2, 1.2), 7, []),
    ("Exp", {}, (-2, 2), 7, []), ("Log", {}, (0.3, 3), 7, []), ("Neg", {}, (-2, 2), 7, []),
    ("Reciprocal", {}, (0.5, 2), 7, []), ("Sqrt", {}, (0.3, 3), 7, []), ("Softplus", {}, (-3, 3), 7, []),
    ("Softsign", {}, (-3, 3), 7, [0]), ("Elu", {"alpha": 0.7}, (-2, 2), 7, [0]),
    ("Selu", {}, (-2, 2), 7, [0]), ("Selu", {"alpha": 1.3, "gamma": 0.9}, (-2, 2), 7, [0]),
    ("Celu", {"alpha": 0.6}, (-2, 2), 12, [0]), ("Mish", {}, (-3, 3), 18, []),
    ("Shrink", {}, (-2, 2), 9, [-0.5, 0.5]), ("Shrink", {"lambd": 0.8, "bias": 0.3}, (-2, 2), 9, [-0.8, 0.8]),
    ("ThresholdedRelu", {"alpha": 0.4}, (-2, 2), 10, [0.4]),
]


def _opsets(first: int, *extra: int) -> list[int]:
    return sorted({max(first, 13), LATEST, *(o for o in extra if o >= first)})


@pytest.mark.parametrize("op,attrs,bounds,opset,kinks", [
    pytest.param(op, attrs, bounds, opset, kinks, id=f"{op}{'-' + '-'.join(map(str, attrs.values())) if attrs else ''}-{opset}")
    for op, attrs, bounds, first, kinks in UNARY for opset in _opsets(first)
])
def test_unary(op, attrs, bounds, opset, kinks):
    x = _away_from(_input(*bounds), kinks)
    _check(_model([helper.make_node(op, ["x"], ["y"], **attrs)], opset), x, channels=(0, 2))


def _second_operand(kind: str):
    """A second operand computed from x: its own shape ('same'), broadcast along H ('row': [1,3,1,5]),
    one per channel ('chan': [1,3,1,1]), without the batch axis ('rank3': [3,4,1]), or a constant of
    lower rank ('const': [4,1])."""
    ends = helper.make_tensor("ends", TensorProto.INT64, [1], [1])
    starts = helper.make_tensor("starts", TensorProto.INT64, [1], [0])
    if kind == "same":
        return [helper.make_node("Mul", ["x", "k"], ["b"])], [numpy_helper.from_array(np.float32(0.7).reshape(()), "k")]
    if kind == "row":
        return [helper.make_node("Slice", ["x", "starts", "ends", "ax"], ["b"])], [
            starts, ends, numpy_helper.from_array(np.array([2], np.int64), "ax")]
    if kind == "chan":
        return [helper.make_node("Slice", ["x", "starts2", "ends2", "ax"], ["b"])], [
            numpy_helper.from_array(np.array([0, 0], np.int64), "starts2"),
            numpy_helper.from_array(np.array([1, 1], np.int64), "ends2"), numpy_helper.from_array(np.array([2, 3], np.int64), "ax")]
    if kind == "rank3":  # no batch axis: each reverse row's signal is its own, not summed with the others'
        return [helper.make_node("Slice", ["x", "starts", "ends", "ax"], ["s"]),
                helper.make_node("Reshape", ["s", "shape"], ["b"])], [
            starts, ends, numpy_helper.from_array(np.array([3], np.int64), "ax"),
            numpy_helper.from_array(np.array([3, 4, 1], np.int64), "shape")]
    value = np.random.default_rng(3).uniform(-1, 1, (4, 1)).astype(np.float32)
    return [], [numpy_helper.from_array(value, "b")]


BINARY_KINDS = ["same", "row", "chan", "rank3", "const"]


@pytest.mark.parametrize("kind", BINARY_KINDS)
@pytest.mark.parametrize("opset", _opsets(7))
@pytest.mark.parametrize("op", ["Max", "Min", "Mean"])
def test_variadic(op, opset, kind):
    """Two or three inputs with broadcasting; Max/Min pick per element, the signal reduced back to each."""
    nodes, inits = _second_operand(kind)
    third = numpy_helper.from_array(np.float32(0.1).reshape(1, 1, 1, 1), "c")
    nodes.append(helper.make_node(op, ["x", "b", "c"], ["y"]))
    _check(_model(nodes, opset, [*inits, third]), _input(), channels=(0, 1))


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Sum"])
def test_batchless_operand_keeps_the_rows_apart(op):
    """An operand without the batch axis ([3,4,1]) that carries the signal: broadcasting is undone
    per reverse row (the rows were summed together when several channels were projected at once)."""
    nodes, inits = _second_operand("rank3")
    nodes.append(helper.make_node(op, ["x", "b"], ["y"]))
    _check(_model(nodes, 13, inits), _input(), channels=(0, 1, 2))


@pytest.mark.parametrize("opset", _opsets(8))
def test_max_of_one_input_and_of_itself(opset):
    nodes = [helper.make_node("Max", ["x"], ["m"]), helper.make_node("Min", ["m", "m", "x"], ["y"])]
    _check(_model(nodes, opset), _input())


@pytest.mark.parametrize("opset", _opsets(7))
def test_keras_relu_as_max(opset):
    """Max(x, 0), as Keras writes ReLU: the gradient is the ReLU's in backprop, and in deconvnet and
    guided it rectifies as the Relu it stands for (either operand order, a 0 of any shape that
    broadcasts)."""
    x = _away_from(_input(), [0])
    R = np.random.default_rng(2).standard_normal((1, *SHAPE[1:])).astype(np.float32)
    relu = _model([helper.make_node("Relu", ["x"], ["y"])], opset)
    want = {}
    for mode in ("deconvnet", "backprop", "guided"):
        p = Projector(relu, analyse(relu), "x", "y", mode)
        want[mode] = p.run_reverse(R, p.forward(x))
    for zero, order in ((np.zeros((), np.float32), ("x", "zero")), (np.zeros((1, SHAPE[1], 1, 1), np.float32), ("zero", "x"))):
        model = _model([helper.make_node("Max", list(order), ["y"])], opset, [numpy_helper.from_array(zero, "zero")])
        for mode, expected in want.items():
            p = Projector(model, analyse(model), "x", "y", mode)
            np.testing.assert_allclose(p.run_reverse(R, p.forward(x)), expected, rtol=1e-6, atol=1e-7, err_msg=mode)
    backprop = want["backprop"][0]
    assert np.all(want["deconvnet"][0] >= 0) and np.any(backprop < 0)  # deconvnet rectifies: not the gradient


def test_max_of_x_and_a_nonzero_constant_is_no_relu():
    """Max(x, 0.5) is not a ReLU: exact gradient in every mode."""
    half = numpy_helper.from_array(np.full((), 0.5, np.float32), "half")
    _check(_model([helper.make_node("Max", ["x", "half"], ["y"])], 13, [half]), _away_from(_input(), [0.5]))


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_splits_ties_evenly(op):
    """Where inputs tie, each gets an equal share of the signal (torch's rule for maximum/minimum):
    Max(x, 0, x·0) at x = 0 passes a third to x; elsewhere x gets all of it or none."""
    x = _input()
    x[0, 0, 0, :3] = 0.0
    nodes = [helper.make_node("Mul", ["x", "zero"], ["x0"]), helper.make_node(op, ["x", "zero", "x0"], ["y"])]
    model = _model(nodes, 13, [numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    p = Projector(model, analyse(model), "x", "y", "backprop")
    R = np.random.default_rng(0).standard_normal((1, *SHAPE[1:])).astype(np.float32)
    g = p.run_reverse(R, p.forward(x))[0]
    wins = (x[0] > 0) if op == "Max" else (x[0] < 0)
    expected = np.where(x[0] == 0, R[0] / 3, np.where(wins, R[0], 0.0))  # x·0's third goes back times 0
    np.testing.assert_allclose(g, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", BINARY_KINDS)
@pytest.mark.parametrize("opset", _opsets(9))
def test_where(opset, kind):
    nodes, inits = _second_operand(kind)
    nodes += [helper.make_node("Greater", ["x", "b"], ["cond"]), helper.make_node("Sin", ["x"], ["sx"]),
              helper.make_node("Where", ["cond", "sx", "b"], ["y"])]
    _check(_model(nodes, opset, inits), _input(), channels=(0, 1))


@pytest.mark.parametrize("kind", BINARY_KINDS)
@pytest.mark.parametrize("opset", _opsets(7))
def test_pow(opset, kind):
    """Pow with a positive base: the exponent a constant, or computed from x (both operands carry signal)."""
    nodes, inits = _second_operand(kind)
    nodes += [helper.make_node("Exp", ["x"], ["base"]), helper.make_node("Pow", ["base", "b"], ["y"])]
    _check(_model(nodes, opset, inits), _input(-1, 1), channels=(0, 1))


@pytest.mark.parametrize("exponent", [np.float32(2.0), np.float32(0.5), np.int64(3)])
@pytest.mark.parametrize("opset", _opsets(7))
def test_pow_constant_exponent(opset, exponent):
    if opset < 12 and exponent.dtype == np.int64:
        pytest.skip("integer exponents came with Pow-12")
    x = _input(0.3, 2) if exponent == 0.5 else _input()
    e = numpy_helper.from_array(np.asarray(exponent).reshape(()), "e")
    _check(_model([helper.make_node("Pow", ["x", "e"], ["y"])], opset, [e]), x)


@pytest.mark.parametrize("kind", [k for k in BINARY_KINDS if k != "rank3"])  # a Sigmoid of a batchless signal: not supported
@pytest.mark.parametrize("opset", _opsets(10))
def test_mod(opset, kind):
    """Float Mod (fmod=1) with a divisor away from 0; the quotient's jumps are kept off the steps."""
    nodes, inits = _second_operand(kind)
    nodes += [helper.make_node("Sigmoid", ["b"], ["sb"]), helper.make_node("Add", ["sb", "half"], ["d"]),
              helper.make_node("Mod", ["x", "d"], ["y"], fmod=1)]
    model = _model(nodes, opset, [*inits, numpy_helper.from_array(np.float32(0.5).reshape(()), "half")])
    x = _input()
    # away from multiples of the divisor (the sawtooth's jumps): move x off them
    d = ReferenceEvaluator(model).run(["d"], {"x": x})[0]
    frac = np.fmod(x, d) / d
    x = np.where(np.abs(frac) < 0.1, x + 0.2 * np.broadcast_to(d, x.shape), x).astype(np.float32)
    _check(model, x, channels=(0, 1))


@pytest.mark.parametrize("opset", sorted({15, LATEST}))
def test_cast_like(opset):
    like = numpy_helper.from_array(np.zeros((1,), np.float32), "like")
    nodes = [helper.make_node("CastLike", ["x", "like"], ["c"]), helper.make_node("Sin", ["c"], ["y"])]
    _check(_model(nodes, opset, [like]), _input())


# ---------------------------------------------------------------- softmax


@pytest.mark.parametrize("axis", [None, 1, 2, -1, 0])
@pytest.mark.parametrize("opset", sorted({11, 13, LATEST}))
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax(op, opset, axis):
    """Opset 11 coerces to 2-D at axis (default 1): the normalization runs over every later axis."""
    attrs = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("Mul", ["x", "k"], ["t"]), helper.make_node(op, ["t"], ["s"], **attrs),
             helper.make_node("Mul", ["s", "w"], ["y"])]  # a weight, so that ½Σy² is no constant of x
    w = numpy_helper.from_array(np.random.default_rng(2).uniform(0.5, 2, SHAPE).astype(np.float32), "w")
    model = _model(nodes, opset, [numpy_helper.from_array(np.float32(1.5).reshape(()), "k"), w])
    if axis == 0 and opset >= 13:  # over the batch of one: constant 1 (zero gradient), its log 0
        x = _input()
        out = Projector(model, analyse(model), "x", "y", "backprop").project(x, [0, 1], keep="map")
        assert all(np.abs(r.projection).max() < 1e-6 for r in out)
        return
    _check(model, _input(), channels=(0, 2))


def test_softmax_coerced_differs_from_axis_alone():
    """The old 2-D coercion is honoured: the same node at opset 11 and 13 projects differently."""
    x = _input()
    out = []
    for opset in (11, 13):
        model = _model([helper.make_node("Softmax", ["x"], ["s"], axis=2), helper.make_node("Mul", ["s", "s"], ["y"])], opset)
        out.append(Projector(model, analyse(model), "x", "y", "backprop").project(x, [0], keep="map")[0].projection)
    assert np.abs(out[0] - out[1]).max() > 1e-3 * np.abs(out[1]).max()


def test_hardmax_carries_no_signal():
    assert "Hardmax" in NO_SIGNAL and "Hardmax" not in NOT_YET
    model = _model([helper.make_node("Hardmax", ["x"], ["y"])], 13)
    assert "Hardmax" not in RULES
    with pytest.raises(UnsupportedError, match="Hardmax"):
        Projector(model, analyse(model), "x", "y", "backprop")


# ---------------------------------------------------------------- Reduce*

REDUCE = ["ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
          "ReduceMax", "ReduceMin", "ReduceProd", "ReduceMean"]


def _reduce_model(op: str, opset: int, axes, keepdims: int, noop: int | None = None) -> onnx.ModelProto:
    """x → (positive for ReduceLogSum/ReduceProd) → op → times a weight of the output's shape."""
    as_input = opset >= 18 or (op == "ReduceSum" and opset >= 13)
    attrs = {"keepdims": keepdims}
    if noop is not None:
        attrs["noop_with_empty_axes"] = noop
    inits, ins = [], ["t"]
    if axes is not None and as_input:
        inits.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
        ins.append("axes")
    elif axes is not None:
        attrs["axes"] = axes
    positive = op in ("ReduceLogSum", "ReduceProd")
    nodes = [helper.make_node("Sigmoid" if positive else "Identity", ["x"], ["t0"]),
             helper.make_node("Add", ["t0", "shift"], ["t"]), helper.make_node(op, ins, ["r"], **attrs)]
    inits.append(numpy_helper.from_array(np.float32(0.5 if positive else 0.0).reshape(()), "shift"))
    probe = _model(nodes + [helper.make_node("Identity", ["r"], ["y"])], opset, inits)
    shape = [d.dim_value for d in onnx.shape_inference.infer_shapes(probe).graph.output[0].type.tensor_type.shape.dim]
    w = np.random.default_rng(4).uniform(0.5, 2, shape).astype(np.float32)
    inits.append(numpy_helper.from_array(w, "w"))
    return _model(nodes + [helper.make_node("Mul", ["r", "w"], ["y"])], opset, inits)


AXES = [([2], 1), ([2], 0), ([-1], 1), ([1, 3], 1), ([2, 3], 0), ([1], 1), (None, 1), ([0, 2], 1)]


@pytest.mark.parametrize("op,opset,axes,keepdims", [
    pytest.param(op, opset, axes, keepdims, id=f"{op}-{opset}-{axes}-keep{keepdims}")
    for op in REDUCE for opset in sorted({11, 13, 18, LATEST}) for axes, keepdims in AXES
    if op != "ReduceMean" or axes is None or 0 in axes  # ReduceMean had a rule without the batch axis
])
def test_reduce(op, opset, axes, keepdims):
    """Axes as an attribute (before 18; ReduceSum before 13) or an input; the batch axis of one among
    them (kept); every axis at once (no axes: the target is then [1,1,1,1], channel 0 only)."""
    model = _reduce_model(op, opset, axes, keepdims)
    channels = (0,) if axes is None or 1 in axes else (0, 2)
    _check(model, _input(seed=len(op) + opset), channels=channels)


@pytest.mark.parametrize("op", REDUCE[:-1])
def test_reduce_noop_with_empty_axes(op):
    """noop_with_empty_axes=1 and no axes: the op is the identity there (opset 18)."""
    _check(_reduce_model(op, 18, None, 1, noop=1), _input(), channels=(0, 1))


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_reduce_max_splits_ties_evenly(op):
    """Two equal maxima share the signal (torch's amax rule): each gets half."""
    x = _input()
    x[0, :, 1, :] = x[0, :, 2, :] = 5.0 if op == "ReduceMax" else -5.0
    model = _model([helper.make_node(op, ["x"], ["y"], axes=[2], keepdims=1)], 13)
    (result,) = Projector(model, analyse(model), "x", "y", "backprop").project(x, [0], keep="map")
    g = result.projection[0]
    np.testing.assert_allclose(g[1], 0.5 * x[0, 0, 1], rtol=1e-6)
    np.testing.assert_allclose(g[2], 0.5 * x[0, 0, 2], rtol=1e-6)
    assert not g[[0, 3]].any()


@pytest.mark.parametrize("zeros", [0, 1, 2])
def test_reduce_prod_with_zeros(zeros):
    """The product of the others, also where an element is 0 (no y/x division)."""
    x = _input(0.5, 1.5)
    x[0, :, :zeros, 0] = 0.0
    model = _model([helper.make_node("ReduceProd", ["x"], ["y"], axes=[2], keepdims=1)], 13)
    (result,) = Projector(model, analyse(model), "x", "y", "backprop").project(x, [1], keep="map")
    xc = x[0, 1].astype(np.float64)
    y = np.prod(xc, axis=0)
    others = np.stack([np.prod(np.delete(xc, i, axis=0), axis=0) for i in range(xc.shape[0])])
    np.testing.assert_allclose(result.projection[1], y * others, rtol=1e-5, atol=1e-7)
    assert not result.projection[[0, 2]].any()


def test_reduce_over_the_batch_dropped_is_refused():
    model = _model([helper.make_node("ReduceSum", ["x"], ["y"], axes=[0, 1], keepdims=0)], 11)
    with pytest.raises(UnsupportedError, match="batch axis"):
        Projector(model, analyse(model), "x", "y", "backprop")
