"""Reverse rules of the structural ops of issue 16 (copies, rearrangements, gathers and scatters,
Lp pools and norms, instance and group norms, Einsum, quantization, Resize modes): each one-node
model's backprop pass checked on onnxruntime runs of the forward op.

Ops that are linear in the input (Expand, Tile, Pad, DepthToSpace, gathers, Resize, …) pass the
dot-product test Σ R·y(x) = Σ (Aᵀ·R)·x with two reverse rows at once (test_reverse_fd's
``_adjoint_check``); the others equal central finite differences of ½·Σ y² along random
directions (test_reverse_fd's ``Objective`` and ``_agrees``).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import reverse_models as RM
from onnx import numpy_helper
from test_reverse_fd import EPSILONS, Objective, _adjoint_check, _agrees, _one_op_model  # noqa: F401

from cnncli.engine.project import Projector
from cnncli.errors import UnsupportedError
from cnncli.frontend.graph import analyse


def ints(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def floats(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32), name)


def one_op(op_type, shape, inits=(), opset=17, n_out=1, extra_inputs=(), **attrs):
    """A one-node model (input x, output y) whose non-x inputs are initializers (or named extras)."""
    model = _one_op_model(op_type, shape, inits, n_out=n_out, extra_inputs=extra_inputs, **attrs)
    model.opset_import[0].version = opset
    model.ir_version = 9 if opset >= 19 else 8
    return model


def assert_adjoint(model, shape, seed=0):
    err = _adjoint_check(model, shape, np.random.default_rng(seed))
    assert err is not None, "onnxruntime rejected the model or its shape differs from the analysed one"
    assert err < 1e-5, err


def assert_gradient(model, shape, channels=(0,), seed=1, directions=3):
    """Backprop of ½·Σ y_c² (channel c of batch row 0) equals finite differences along random directions."""
    case = RM.Case("one", model, "y", tuple(shape), list(channels))
    x = case.input(seed=seed)
    results = Projector(model, analyse(model), "x", "y", "backprop").project(x, list(channels), keep="map")
    rng = np.random.default_rng(seed)
    for result in results:
        grad = result.projection.astype(np.float64)
        obj = Objective(case, result.channel)
        assert np.abs(grad).max() > 0
        for _ in range(directions):
            v = rng.standard_normal(x.shape)
            v /= np.linalg.norm(v)
            gd = float(np.sum(grad * v[0]))
            ok, tried = _agrees(obj, x, v, gd, 1e-2 * abs(gd) + 1e-3 * np.linalg.norm(grad))
            assert ok, f"channel {result.channel}: directional derivative {gd} vs finite differences {tried}"


# ---------------------------------------------------------------- copies and rearrangements


@pytest.mark.parametrize("xs,to", [((1, 3, 1, 4), (1, 3, 5, 4)), ((1, 1, 4), (2, 3, 4)), ((1, 3, 1, 1), (1, 1, 3, 2, 2)),
                                   ((1, 3, 2), (1, 3, 2))])
def test_expand(xs, to):
    model = one_op("Expand", xs, [ints("shape", to)])
    if to[0] != 1 and len(to) == len(xs):
        with pytest.raises(UnsupportedError, match="batch axis"):
            Projector(model, analyse(model), "x", "y", "backprop")
        return
    assert_adjoint(model, xs)


@pytest.mark.parametrize("xs,reps", [((1, 2, 3, 4), (1, 2, 1, 3)), ((1, 3, 2), (1, 1, 4)), ((1, 5), (1, 3))])
def test_tile(xs, reps):
    assert_adjoint(one_op("Tile", xs, [ints("repeats", reps)]), xs)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize("block", [2, 3])
def test_depth_to_space(mode, block):
    shape = (1, 2 * block * block, 3, 4)
    assert_adjoint(one_op("DepthToSpace", shape, blocksize=block, mode=mode), shape)


@pytest.mark.parametrize("block", [2, 3])
def test_space_to_depth(block):
    shape = (1, 3, 2 * block, 3 * block)
    assert_adjoint(one_op("SpaceToDepth", shape, blocksize=block), shape)


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, -1, 0, 2])
def test_trilu(upper, k):
    shape = (1, 2, 4, 5)
    inits = [ints("k", k)] if k is not None else []
    assert_adjoint(one_op("Trilu", shape, inits, opset=14, upper=upper), shape)


@pytest.mark.parametrize("mode", ["reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", [(0, 0, 1, 2, 0, 0, 2, 1), (0, 1, 0, 3, 0, 2, 3, 0), (0, 0, 3, 0, 0, 0, 0, 4)])
def test_pad_modes(mode, pads):
    shape = (1, 3, 5, 6)
    opset = 19 if mode == "wrap" else 17
    assert_adjoint(one_op("Pad", shape, [ints("pads", pads)], opset=opset, mode=mode), shape)


def test_pad_with_axes_in_reflect_mode():
    shape = (1, 2, 5, 6)
    model = one_op("Pad", shape, [ints("pads", [2, 1, 0, 3]), floats("value", 0.0), ints("axes", [-1, 2])], opset=18,
                   mode="reflect")
    assert_adjoint(model, shape)
