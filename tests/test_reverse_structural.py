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


# ---------------------------------------------------------------- gathers and scatters


def _rng_indices(seed, shape, n):
    return np.random.default_rng(seed).integers(-n, n, shape)


@pytest.mark.parametrize("axis", [1, 2, -1, 0])
def test_gather_elements(axis):
    shape = (1, 3, 4, 5)
    ishape = [1, 3, 4, 5]
    ishape[axis] = 6 if axis else 1  # more picks than places: some taken twice
    idx = _rng_indices(axis + 5, ishape, shape[axis])
    if axis == 0:
        idx = np.zeros(ishape, np.int64)
    assert_adjoint(one_op("GatherElements", shape, [ints("idx", idx)], axis=axis), shape)


def test_gather_elements_with_indices_from_the_input():
    """The indices come from an ArgMax of the input: the reverse scatters with the forward run's."""
    shape = (1, 3, 4, 5)
    arg = onnx.helper.make_node("ArgMax", ["x"], ["a"], axis=2, keepdims=1)
    gat = onnx.helper.make_node("GatherElements", ["x", "a"], ["y"], axis=2)
    model = RM.helper.make_model(RM.helper.make_graph([arg, gat], "g", [RM.helper.make_tensor_value_info("x", RM.FLOAT, list(shape))],
                                                      [RM.helper.make_tensor_value_info("y", RM.FLOAT, None)]),
                                 opset_imports=[RM.helper.make_opsetid("", 17)])
    model.ir_version = 8
    assert_adjoint(model, shape)


@pytest.mark.parametrize("batch_dims,idx", [
    (0, [[[0, 1], [0, 2], [0, 1]]]),                   # pick rows (one twice)
    (0, [[[0, 2, 3], [0, -1, 0]]]),                    # single elements
    (1, [[[2], [0], [2]]]),                            # batch_dims 1
    (2, [[[[1], [3]], [[0], [0]], [[2], [1]]]]),       # batch_dims 2
])
def test_gather_nd(batch_dims, idx):
    shape = (1, 3, 4)
    assert_adjoint(one_op("GatherND", shape, [ints("idx", idx)], batch_dims=batch_dims), shape)


def test_gather_nd_whose_output_batch_is_not_the_input_batch_is_refused():
    model = one_op("GatherND", (1, 3, 4), [ints("idx", [[0, 1], [0, 2]])])  # y [2, 4]: rows of one image
    with pytest.raises(UnsupportedError, match="batch"):
        Projector(model, analyse(model), "x", "y", "backprop")


@pytest.mark.parametrize("axis,cond", [(1, [1, 0, 1]), (2, [0, 1, 1, 0, 1]), (-1, [1, 1]), (3, [0, 1, 1]), (None, [1, 0])])
def test_compress(axis, cond):
    """The analysis leaves Compress's output size unknown (it depends on the condition's values),
    so it is given here; the rule itself needs only the condition."""
    shape = (1, 3, 5, 2)
    attrs = {} if axis is None else {"axis": axis}
    model = one_op("Compress", shape, [numpy_helper.from_array(np.asarray(cond, bool), "cond")], **attrs)
    graph = analyse(model)
    if axis is None:  # the flattened output's first axis is not the batch
        graph.shapes["y"] = (int(np.sum(cond)),)
        with pytest.raises(UnsupportedError, match="batch"):
            Projector(model, graph, "x", "y", "backprop")
        return
    kept = np.flatnonzero(np.asarray(cond)[: shape[axis]])
    graph.shapes["y"] = tuple(kept.size if i == axis % 4 else n for i, n in enumerate(shape))
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    p = Projector(model, graph, "x", "y", "backprop")
    fwd = p.forward(x)
    R = np.random.default_rng(1).standard_normal((2, *fwd["y"].shape[1:])).astype(np.float32)
    back = p.run_reverse(R, fwd)
    expected = np.zeros((2, *shape[1:]), np.float32)
    np.moveaxis(expected, axis, 0)[kept] = np.moveaxis(R, axis, 0)
    np.testing.assert_allclose(back, expected)  # the adjoint of a selection puts each value back


def _scatter_model(op, shape, idx, ushape, reduction, axis=None, on="data"):
    """data x, updates a constant (on='data'), or updates x and data a constant (on='updates');
    the constant is 0 (y linear in x) unless the updates multiply."""
    rng = np.random.default_rng(4)
    const = floats("c", rng.standard_normal(shape if on == "updates" else ushape) * (reduction == "mul"))
    ins = ["x", "idx", "c"] if on == "data" else ["c", "idx", "x"]
    attrs = {"reduction": reduction, **({} if axis is None else {"axis": axis})}
    node = onnx.helper.make_node(op, ins, ["y"], **attrs)
    x_shape = shape if on == "data" else ushape
    g = RM.helper.make_graph([node], "s", [RM.helper.make_tensor_value_info("x", RM.FLOAT, list(x_shape))],
                             [RM.helper.make_tensor_value_info("y", RM.FLOAT, None)], [ints("idx", idx), const])
    model = RM.helper.make_model(g, opset_imports=[RM.helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model, x_shape


@pytest.mark.parametrize("reduction", ["none", "add", "mul"])
@pytest.mark.parametrize("on", ["data", "updates"])
@pytest.mark.parametrize("axis", [1, 2])
def test_scatter_elements(reduction, on, axis):
    shape, ushape = (1, 3, 5), (1, 2, 3) if axis == 2 else (1, 2, 5)
    rng = np.random.default_rng(axis)
    if reduction == "none":  # distinct places (duplicates are undefined for 'none')
        idx = np.stack([rng.permutation(shape[axis])[: ushape[axis]] for _ in range(int(np.prod(ushape)) // ushape[axis])])
        idx = idx.reshape([ushape[i] for i in range(3) if i != axis] + [ushape[axis]])
        idx = np.moveaxis(idx, -1, axis)
    else:
        idx = rng.integers(0, shape[axis], ushape)
    model, xs = _scatter_model("ScatterElements", shape, idx, ushape, reduction, axis=axis, on=on)
    if reduction == "mul" and on == "updates":
        with pytest.raises(UnsupportedError, match="mul"):
            Projector(model, analyse(model), "x", "y", "backprop")
        return
    assert_adjoint(model, xs)


@pytest.mark.parametrize("reduction", ["none", "add", "mul"])
@pytest.mark.parametrize("on", ["data", "updates"])
@pytest.mark.parametrize("idx", [[[[0, 2], [0, 0]]], [[[0, 1, 3], [0, 2, 2], [0, 0, 1]]]])
def test_scatter_nd(reduction, on, idx):
    shape = (1, 3, 4)
    idx = np.asarray(idx)
    ushape = (*idx.shape[:-1], *shape[idx.shape[-1]:])
    model, xs = _scatter_model("ScatterND", shape, idx, ushape, reduction, on=on)
    if reduction == "mul" and on == "updates":
        with pytest.raises(UnsupportedError, match="mul"):
            Projector(model, analyse(model), "x", "y", "backprop")
        return
    assert_adjoint(model, xs)


@pytest.mark.parametrize("reduction", ["max", "min"])
def test_scatter_max_min_refused(reduction):
    model, _ = _scatter_model("ScatterND", (1, 3, 4), np.asarray([[[0, 1]]]), (1, 1, 4), reduction)
    with pytest.raises(UnsupportedError, match=f"reduction '{reduction}'"):
        Projector(model, analyse(model), "x", "y", "backprop")


@pytest.mark.parametrize("axis,largest,k", [(-1, 1, 3), (1, 0, 2), (2, 1, 4)])
def test_topk_values(axis, largest, k):
    """TopK's values: the signal back at the selected places (piecewise linear, so the adjoint
    identity holds at the forward point); its indices output carries none."""
    shape = (1, 3, 5, 6)
    assert_adjoint(one_op("TopK", shape, [ints("k", [k])], n_out=2, axis=axis, largest=largest), shape)
