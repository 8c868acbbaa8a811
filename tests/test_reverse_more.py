"""Reverse rules of the scans (CumSum, CumProd, ReverseSequence), MeanVarianceNormalization,
RMSNormalization, Swish, CenterCropPad and Det: one-node models, each backprop pass checked on
onnxruntime runs of the forward op (the dot-product test for the linear ones, central finite
differences for the others; test_reverse_structural's helpers), and the same map in every mode.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from test_reverse_structural import assert_adjoint, assert_full_gradient, assert_gradient, assert_vjp, floats, ints, one_op

from cnncli.engine.project import Projector
from cnncli.frontend.graph import analyse
from cnncli.reverse.rules import NOT_YET, RULES


def at(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    model.opset_import[0].version = opset
    model.ir_version = min(onnx.helper.find_min_ir_version_for(model.opset_import), 10) if opset < 23 else 11
    return model


def assert_same_in_every_mode(model, shape, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    maps = {m: Projector(model, analyse(model), "x", "y", m).project(x, [0], keep="map")[0].projection
            for m in ("backprop", "deconvnet", "guided")}
    np.testing.assert_array_equal(maps["deconvnet"], maps["backprop"])
    np.testing.assert_array_equal(maps["guided"], maps["backprop"])


def test_ops_have_a_rule_and_left_not_yet():
    ops = {"CumSum", "CumProd", "ReverseSequence", "MeanVarianceNormalization", "RMSNormalization", "Swish",
           "CenterCropPad", "Det"}
    assert ops - set(RULES) == set()
    assert ops & NOT_YET == set()


@pytest.mark.parametrize("shape,axis", [((1, 3, 4, 5), 1), ((1, 3, 4, 5), -1), ((1, 6), 1), ((1, 2, 7), 2)])
@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
def test_cumsum(shape, axis, exclusive, reverse):
    model = one_op("CumSum", shape, [ints("axis", axis)], exclusive=exclusive, reverse=reverse)
    assert_adjoint(model, shape)
    assert_same_in_every_mode(model, shape)


@pytest.mark.parametrize("exclusive", [0, 1])
def test_cumsum_along_the_batch_axis(exclusive):
    assert_adjoint(one_op("CumSum", (1, 3, 4), [ints("axis", 0)], exclusive=exclusive), (1, 3, 4))
    assert_vjp(one_op("CumSum", (3, 4), [ints("axis", 0)], exclusive=exclusive, reverse=1), (3, 4))


@pytest.mark.parametrize("shape,axis", [((1, 3, 4), 1), ((1, 3, 4, 5), -1), ((1, 5), 1)])
@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
def test_cumprod(shape, axis, exclusive, reverse):
    model = at(one_op("CumProd", shape, [ints("axis", axis)], exclusive=exclusive, reverse=reverse), 26)
    assert_gradient(model, shape, channels=(1,))  # (channel 0 of an exclusive scan along axis 1 is constant)
    assert_same_in_every_mode(model, shape)


def test_cumprod_is_exact_at_a_zero():
    """The gradient at x with a zero is written without dividing by x."""
    shape = (1, 2, 4)
    model = at(one_op("CumProd", shape, [ints("axis", 2)]), 26)
    x = np.array([[[2.0, 0.0, 3.0, -1.5], [0.5, 1.5, 0.0, 0.0]]], dtype=np.float32)
    R = np.random.default_rng(3).standard_normal((1, *shape[1:])).astype(np.float32)
    p = Projector(model, analyse(model), "x", "y", "backprop")
    back = p.run_reverse(R, p.forward(x))[0]
    expected = np.zeros(shape[1:])
    for r in range(2):
        for j in range(4):
            expected[r, j] = sum(R[0, r, i] * np.prod([x[0, r, k] for k in range(i + 1) if k != j]) for i in range(j, 4))
    np.testing.assert_allclose(back, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,batch_axis,time_axis,lens", [
    ((1, 4, 3), 0, 1, [3]), ((1, 5), 0, 1, [4]), ((1, 4, 2, 3), 0, 1, [1]), ((1, 3, 4), 1, 0, [1, 1, 1])])
def test_reverse_sequence(shape, batch_axis, time_axis, lens):
    model = one_op("ReverseSequence", shape, [ints("lens", lens)], batch_axis=batch_axis, time_axis=time_axis)
    assert_adjoint(model, shape)
    assert_same_in_every_mode(model, shape)


@pytest.mark.parametrize("shape,batch_axis,time_axis,lens", [((4, 3, 2), 1, 0, [2, 4, 1]), ((3, 5), 0, 1, [5, 2, 3])])
def test_reverse_sequence_with_a_batch(shape, batch_axis, time_axis, lens):
    assert_vjp(one_op("ReverseSequence", shape, [ints("lens", lens)], batch_axis=batch_axis, time_axis=time_axis), shape)


@pytest.mark.parametrize("shape,axes", [((1, 3, 4, 5), [0, 2, 3]), ((1, 3, 4, 5), [1]), ((1, 3, 4, 5), [2, 3]),
                                        ((1, 6, 5), [1, 2]), ((1, 4, 3, 2), [0, 1, 2, 3])])
def test_mean_variance_normalization(shape, axes):
    model = one_op("MeanVarianceNormalization", shape, axes=axes)
    assert_gradient(model, shape, channels=(0, 1))
    assert_same_in_every_mode(model, shape)


@pytest.mark.parametrize("shape,axis,scale", [((1, 3, 4, 5), -1, (5,)), ((1, 3, 4, 5), 1, (3, 4, 5)),
                                              ((1, 3, 4, 5), 2, (1, 5)), ((1, 6), 0, (6,)), ((1, 2, 7), -2, (2, 7))])
def test_rms_normalization(shape, axis, scale):
    gamma = floats("scale", np.random.default_rng(2).uniform(0.5, 2.0, scale))
    model = at(one_op("RMSNormalization", shape, [gamma], axis=axis, epsilon=1e-3), 23)
    assert_gradient(model, shape, channels=(0, 1))
    assert_same_in_every_mode(model, shape)


@pytest.mark.parametrize("alpha", [1.0, 0.5, 1.702])
@pytest.mark.parametrize("shape", [(1, 3, 4, 5), (1, 7)])
def test_swish(alpha, shape):
    model = at(one_op("Swish", shape, alpha=alpha), 24)
    assert_gradient(model, shape, channels=(0, 1))
    assert_same_in_every_mode(model, shape)


@pytest.mark.parametrize("shape,sizes,axes", [((1, 3, 6, 5), [1, 3, 4, 8], None), ((1, 3, 7, 5), [2, 9], [2, 3]),
                                              ((1, 4, 5), [7], [-1]), ((1, 5, 4), [2, 1], [1, 2]),
                                              ((1, 3, 4, 4), [3, 4], [1, 3])])
def test_center_crop_pad(shape, sizes, axes):
    attrs = {} if axes is None else {"axes": axes}
    model = at(one_op("CenterCropPad", shape, [ints("sizes", sizes)], **attrs), 18)
    assert_adjoint(model, shape)
    assert_same_in_every_mode(model, shape)


def test_center_crop_pad_along_the_batch_axis():
    model = at(one_op("CenterCropPad", (3, 4, 5), [ints("sizes", [2, 6])], axes=[0, 2]), 18)
    assert_vjp(model, (3, 4, 5))


@pytest.mark.parametrize("shape", [(1, 3, 3), (1, 2, 4, 4), (1, 2, 2), (1, 5, 1, 1), (3, 3, 3)])
def test_det(shape):
    assert_full_gradient(at(one_op("Det", shape), 22), shape)


def test_det_of_a_singular_matrix():
    """The cofactors, not det·X⁻ᵀ: a rank-one 3×3 matrix has a zero gradient, a rank-two one not."""
    model = at(one_op("Det", (2, 3, 3)), 22)
    u, v = np.array([1.0, 2.0, -1.0]), np.array([0.5, -1.0, 2.0])
    w = np.array([[1.0, 0.0, 3.0], [2.0, 1.0, 0.0], [3.0, 1.0, 3.0]])  # row 3 = row 1 + row 2
    x = np.stack([np.outer(u, v), w]).astype(np.float32)
    p = Projector(model, analyse(model), "x", "y", "backprop")
    back = p.run_reverse(np.ones((2,), np.float32), p.forward(x))
    expected = [np.zeros((3, 3)), np.array([[np.linalg.det(np.delete(np.delete(w, i, 0), j, 1)) * (-1) ** (i + j)
                                              for j in range(3)] for i in range(3)])]
    np.testing.assert_allclose(back, np.stack(expected), atol=1e-5)
