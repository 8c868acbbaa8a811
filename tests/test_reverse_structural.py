"""Reverse rules of issue 16's structural ops: copies and rearrangements (Expand, Tile, Pad in
every mode, DepthToSpace, SpaceToDepth, Trilu), gathers and scatters (GatherElements, GatherND,
Compress, ScatterElements/ND with every reduction, TopK), and ops along the batch axis (Split,
Slice, Gather): each one-node model's backprop pass checked on onnxruntime runs of the forward op.
test_reverse_numeric.py covers the numeric ops with the helpers defined here.

Ops that are linear in the input pass the dot-product test Σ R·y(x) = Σ (Aᵀ·R)·x with two reverse
rows at once (test_reverse_fd's ``_adjoint_check``), or with one signal shaped as the output
where the op moves values along the batch axis; the others equal central finite differences
(test_reverse_fd's ``Objective`` and ``_agrees``).
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import reverse_models as RM
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from test_reverse_fd import Objective, _adjoint_check, _agrees, _one_op_model

from cnncli.engine.project import Projector
from cnncli.errors import UnsupportedError
from cnncli.frontend.graph import analyse
from cnncli.reverse import OUTPUT, SEED, build_reverse
from cnncli.runtime.sessions import make_session


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


def _weighted(model):
    """The model with its output y multiplied by a fixed random tensor (still called y)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    ys = analyse(model).shape("y")
    for node in m.graph.node:
        node.output[:] = ["y_raw" if o == "y" else o for o in node.output]
        node.input[:] = ["y_raw" if i == "y" else i for i in node.input]
    m.graph.initializer.append(floats("weighting", np.random.default_rng(9).uniform(-2, 2, ys)))
    m.graph.node.append(onnx.helper.make_node("Mul", ["y_raw", "weighting"], ["y"]))
    return m


def assert_vjp(model, shape, graph=None, seed=0):
    """For an op that moves values along the batch axis: one reverse signal R shaped as the whole
    output (its batch is the reverse rows) must satisfy Σ R·y(x) = Σ (Aᵀ·R)·x."""
    graph = graph or analyse(model)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    p = Projector(model, graph, "x", "y", "backprop")
    fwd = p.forward(x)
    R = rng.standard_normal(fwd["y"].shape).astype(np.float32)
    back = p.run_reverse(R, fwd).astype(np.float64)
    assert back.shape == x.shape
    lhs, rhs = float(np.sum(R * fwd["y"].astype(np.float64))), float(np.sum(back * x))
    assert abs(lhs - rhs) <= 1e-5 * np.linalg.norm(R) * np.linalg.norm(fwd["y"]), (lhs, rhs)


def assert_gradient(model, shape, channels=(0,), seed=1, directions=3):
    """Backprop of ½·Σ (w·y)_c² (channel c of batch row 0, w a fixed random weighting: a normalised
    output's own ½·Σ y² is constant) equals finite differences along random directions."""
    model = _weighted(model)
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


def assert_full_gradient(model, shape, seed=0, eps=1e-2):
    """The reverse of one signal R shaped as the whole output is ∇⟨R, y⟩: central differences
    along random directions (for ops that move or mix values along the batch axis)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    p = Projector(model, analyse(model), "x", "y", "backprop")
    fwd = p.forward(x.astype(np.float32))
    R = rng.standard_normal(fwd["y"].shape)
    back = p.run_reverse(R.astype(np.float32), fwd).astype(np.float64)
    for _ in range(3):
        v = rng.standard_normal(shape)
        up, down = (p.forward((x + s * eps * v).astype(np.float32))["y"].astype(np.float64) for s in (1, -1))
        fd = float(np.sum(R * (up - down))) / (2 * eps)
        assert abs(fd - float(np.sum(back * v))) <= 1e-2 * np.linalg.norm(back) * np.linalg.norm(v), (fd, float(np.sum(back * v)))


# ---------------------------------------------------------------- copies and rearrangements


@pytest.mark.parametrize("xs,to", [((1, 3, 1, 4), (1, 3, 5, 4)), ((1, 1, 4), (2, 3, 4)), ((1, 3, 1, 1), (1, 1, 3, 2, 2)),
                                   ((1, 3, 2), (1, 3, 2)), ((3, 1), (2, 3, 6))])
def test_expand(xs, to):
    model = one_op("Expand", xs, [ints("shape", to)])
    if to[0] != 1:  # copies along the batch axis: one signal shaped as the output
        assert_vjp(model, xs)
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


def test_space_to_depth_crd_mode():
    """Opset 28's mode: CRD, checked against onnx's reference (onnxruntime has no opset 28)."""
    shape = (1, 2, 4, 6)
    model = one_op("SpaceToDepth", shape, opset=28, blocksize=2, mode="CRD")
    model.ir_version = 11
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    y = ReferenceEvaluator(model).run(None, {"x": x})[0]
    rev = build_reverse(analyse(model), "y", "backprop", "x")
    R = np.random.default_rng(1).standard_normal((2, *y.shape[1:])).astype(np.float32)
    back = make_session(rev.model.SerializeToString(), "cpu").run([OUTPUT], {SEED: R})[0]
    lhs = R.reshape(2, -1) @ y.reshape(-1)
    np.testing.assert_allclose(back.reshape(2, -1) @ x.reshape(-1), lhs, rtol=1e-5)


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


@pytest.mark.parametrize("pads", [(0, -1, 2, 0, 0, 1, -2, -1), (0, 0, -2, -3, 0, 0, -1, 0)])
def test_constant_pad_with_negative_pads(pads):
    """Negative pads crop: their places get no signal (zeros back)."""
    shape = (1, 3, 5, 6)
    assert_adjoint(one_op("Pad", shape, [ints("pads", pads)], mode="constant"), shape)


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


@pytest.mark.parametrize("shape,idx,batch_dims", [((1, 3, 4), [[0, 1], [0, 2], [0, 1]], 0),   # y [3, 4]: rows of one image
                                                  ((2, 3), [[1, 0], [0, 2], [1, 1]], 0),
                                                  ((2, 3, 4), [[1], [0]], 1)])
def test_gather_nd_along_the_batch_axis(shape, idx, batch_dims):
    """An output whose first axis is not the input's batch of one: one signal shaped as the output."""
    assert_vjp(one_op("GatherND", shape, [ints("idx", idx)], batch_dims=batch_dims), shape)


def test_tile_along_the_batch_axis():
    shape = (2, 3, 2)
    assert_vjp(one_op("Tile", shape, [ints("repeats", [3, 1, 2])]), shape)


def test_gather_elements_along_the_batch_axis():
    shape = (3, 2, 4)
    idx = np.random.default_rng(5).integers(-3, 3, (4, 2, 4))
    assert_vjp(one_op("GatherElements", shape, [ints("idx", idx)], axis=0), shape)


@pytest.mark.parametrize("axis,cond", [(1, [1, 0, 1]), (2, [0, 1, 1, 0, 1]), (-1, [1, 1]), (3, [0, 1, 1]), (None, [1, 0])])
def test_compress(axis, cond):
    """The analysis leaves Compress's output size unknown (it depends on the condition's values),
    so it is given here; the rule itself needs only the condition."""
    shape = (1, 3, 5, 2)
    attrs = {} if axis is None else {"axis": axis}
    model = one_op("Compress", shape, [numpy_helper.from_array(np.asarray(cond, bool), "cond")], **attrs)
    graph = analyse(model)
    if axis is None:  # flattened: one signal shaped as the output
        graph.shapes["y"] = (int(np.sum(cond)),)
        assert_vjp(model, shape, graph)
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


@pytest.mark.parametrize("op", ["ScatterElements", "ScatterND"])
@pytest.mark.parametrize("reduction", ["max", "min"])
@pytest.mark.parametrize("on", ["data", "updates"])
def test_scatter_max_min(op, reduction, on):
    """Against zeros (y is then homogeneous in x: the dot-product test holds at the forward point)."""
    shape, idx = (1, 3, 5), np.asarray([[[0, 1], [0, 1], [0, 2]]])  # place (0, 1) twice
    if op == "ScatterElements":
        idx, ushape = np.asarray([[[1, 2, 1], [1, 2, 0]]]), (1, 2, 3)
    else:
        ushape = idx.shape[:-1] + shape[2:]
    model, xs = _scatter_model(op, shape, idx, ushape, reduction, axis=1 if op == "ScatterElements" else None, on=on)
    assert_adjoint(model, xs)


@pytest.mark.parametrize("reduction", ["max", "min"])
def test_scatter_max_min_ties_split_evenly(reduction):
    """Updates equal to the data they meet (a copy of it): the tie splits the signal, and the
    gradient of y = x (through both paths) is whole."""
    shape = (1, 3, 4)
    idx = ints("idx", [[[0, 1], [0, 2]]])
    nodes = [onnx.helper.make_node("GatherND", ["x", "idx"], ["u"]),
             onnx.helper.make_node("Sin", ["x"], ["s"]),
             onnx.helper.make_node("ScatterND", ["s", "idx", "u"], ["t"], reduction=reduction),
             onnx.helper.make_node("ScatterND", ["t", "idx", "u"], ["y"], reduction=reduction)]
    g = RM.helper.make_graph(nodes, "ties", [RM.helper.make_tensor_value_info("x", RM.FLOAT, list(shape))],
                             [RM.helper.make_tensor_value_info("y", RM.FLOAT, None)], [idx])
    model = RM.helper.make_model(g, opset_imports=[RM.helper.make_opsetid("", 18)])
    model.ir_version = 8
    assert_gradient(model, shape, channels=(0, 1, 2))


@pytest.mark.parametrize("axis,largest,k", [(-1, 1, 3), (1, 0, 2), (2, 1, 4)])
def test_topk_values(axis, largest, k):
    """TopK's values: the signal back at the selected places (piecewise linear, so the adjoint
    identity holds at the forward point); its indices output carries none."""
    shape = (1, 3, 5, 6)
    assert_adjoint(one_op("TopK", shape, [ints("k", [k])], n_out=2, axis=axis, largest=largest), shape)


# ---------------------------------------------------------------- along the batch axis: one signal shaped as the output


@pytest.mark.parametrize("used", [0, 1, 2])
def test_split_along_the_batch_axis_with_one_output_used(used):
    shape = (7, 2)
    node = onnx.helper.make_node("Split", ["x", "sp"], ["y" if i == used else f"o{i}" for i in range(3)], axis=0)
    g = RM.helper.make_graph([node], "s", [RM.helper.make_tensor_value_info("x", RM.FLOAT, list(shape))],
                             [RM.helper.make_tensor_value_info("y", RM.FLOAT, None)], [ints("sp", [2, 1, 4])])
    model = RM.helper.make_model(g, opset_imports=[RM.helper.make_opsetid("", 13)])
    model.ir_version = 8
    assert_vjp(model, shape)


@pytest.mark.parametrize("starts,ends,steps", [([1], [4], [1]), ([4], [-9], [-2]), ([0], [5], [2])])
def test_slice_of_the_batch_axis(starts, ends, steps):
    shape = (5, 3, 2)
    model = one_op("Slice", shape, [ints("st", starts), ints("en", ends), ints("ax", [0]), ints("sp", steps)])
    assert_vjp(model, shape)


@pytest.mark.parametrize("shape,idx", [((4, 3), [[3, 0], [1, 3]]), ((1, 3, 2), [0]), ((3, 2), [-1, 2, 0, 2])])
def test_gather_along_the_batch_axis(shape, idx):
    model = one_op("Gather", shape, [ints("idx", idx)], axis=0)
    if shape[0] == 1:  # batch 1, its row taken: the reverse rows pass
        assert_adjoint(model, shape)
    else:
        assert_vjp(model, shape)


def _training_model(node: onnx.NodeProto, inits: list) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "training", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])


@pytest.mark.parametrize("ratio,refused", [(0.5, True), (0.0, False)])
def test_dropout_in_training_mode_is_refused_unless_its_ratio_is_zero(ratio, refused):
    """In training mode Dropout masks at random (no reverse pass can repeat the mask); with ratio
    0 it is the identity. onnx's node tests caught the rule passing the signal through."""
    inits = [numpy_helper.from_array(np.array(ratio, np.float32), "r"), numpy_helper.from_array(np.array(True), "t")]
    model = _training_model(helper.make_node("Dropout", ["x", "r", "t"], ["y"]), inits)
    if refused:
        with pytest.raises(UnsupportedError, match="training mode"):
            Projector(model, analyse(model), "x", "y", "backprop")
    else:
        Projector(model, analyse(model), "x", "y", "backprop")


def test_batchnorm_in_training_mode_is_refused():
    """training_mode=1 normalises by the batch's own statistics, not the inference form the rule
    differentiates (onnx's node tests caught it)."""
    inits = [numpy_helper.from_array(np.ones(2, np.float32), n) for n in ("s", "b", "m", "v")]
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], training_mode=1)
    model = _training_model(node, inits)
    with pytest.raises(UnsupportedError, match="training mode"):
        Projector(model, analyse(model), "x", "y", "backprop")
