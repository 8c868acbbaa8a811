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
from onnx.reference import ReferenceEvaluator
from test_reverse_fd import Objective, _adjoint_check, _agrees, _one_op_model, _sweep

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


# ---------------------------------------------------------------- normalizations (not linear: finite differences)


def _scale_bias(c, seed=3):
    rng = np.random.default_rng(seed)
    return [floats("scale", rng.uniform(0.5, 2.0, c)), floats("bias", rng.standard_normal(c))]


@pytest.mark.parametrize("shape", [(1, 3, 5, 4), (1, 2, 7), (1, 2, 3, 3, 2)])
def test_instance_normalization(shape):
    model = one_op("InstanceNormalization", shape, _scale_bias(shape[1]), epsilon=1e-3)
    assert_gradient(model, shape, channels=range(shape[1]))


@pytest.mark.parametrize("opset,groups,shape", [(21, 2, (1, 4, 3, 5)), (21, 3, (1, 6, 4)), (21, 1, (1, 3, 4, 4)),
                                                (18, 2, (1, 4, 3, 5))])
def test_group_normalization(opset, groups, shape):
    """Opset 21: scale and bias per channel; opset 18: per group."""
    c = shape[1] if opset >= 21 else groups
    model = one_op("GroupNormalization", shape, _scale_bias(c), opset=opset, num_groups=groups, epsilon=1e-3)
    assert_gradient(model, shape, channels=(0, shape[1] - 1))


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("axis", [1, -1, 2])
def test_lp_normalization(p, axis):
    shape = (1, 3, 4, 5)
    assert_gradient(one_op("LpNormalization", shape, p=p, axis=axis), shape, channels=(0, 2))


# ---------------------------------------------------------------- Lp pools


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [2, 2], "strides": [2, 2]},
    {"kernel_shape": [3, 2], "strides": [1, 2], "pads": [1, 0, 1, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 1], "auto_pad": "SAME_UPPER"},
])
def test_lp_pool(p, attrs):
    shape = (1, 2, 6, 5)
    assert_gradient(one_op("LpPool", shape, p=p, **attrs), shape, channels=(0, 1))


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("shape", [(1, 3, 4, 5), (1, 2, 6)])
def test_global_lp_pool(p, shape):
    assert_gradient(one_op("GlobalLpPool", shape, p=p), shape, channels=(0, 1))


# ---------------------------------------------------------------- products of two variable operands


def _two_operand_model(op, eq, shape, left, right, opset=17):
    """An op of two operands each computed from x (left and right make them; None: x itself, so
    both None is x op x, one tensor on both sides)."""
    nodes = [left("x", "a")] if left else []
    nodes += [right("x", "b")] if right else []
    ins = ["a" if left else "x", "b" if right else "x"]
    nodes.append(onnx.helper.make_node(op, ins, ["y"], **({"equation": eq} if eq else {})))
    g = RM.helper.make_graph(nodes, "two", [RM.helper.make_tensor_value_info("x", RM.FLOAT, list(shape))],
                             [RM.helper.make_tensor_value_info("y", RM.FLOAT, None)])
    model = RM.helper.make_model(g, opset_imports=[RM.helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _perm(*perm):
    return lambda i, o: onnx.helper.make_node("Transpose", [i], [o], perm=list(perm))


def _sin(i, o):
    return onnx.helper.make_node("Sin", [i], [o])


@pytest.mark.parametrize("eq,shape,left,right", [
    ("bhqd,bhkd->bhqk", (1, 2, 4, 3), None, _sin),                        # attention scores q·kᵀ
    ("bhqk,bhkd->bhqd", (1, 2, 3, 3), _sin, None),                        # scores · values
    ("bij,bjk->bik", (1, 3, 3), None, None),                              # x·x
    ("...ij,...jk", (1, 2, 3, 3), _sin, _perm(0, 1, 3, 2)),               # ellipsis, implicit output
    ("bcij,bcjk->bc", (1, 2, 3, 3), None, _sin),                          # i, k summed in the output
    ("bij,bkl->bik", (1, 3, 4), None, _sin),                              # j, l summed within one operand
])
def test_einsum_two_variable_operands(eq, shape, left, right):
    assert_gradient(_two_operand_model("Einsum", eq, shape, left, right, opset=12), shape, channels=(0, 1))


@pytest.mark.parametrize("shape,left,right", [
    ((1, 2, 3, 3), None, None),               # x·x: one tensor, both sides (its two signals add)
    ((1, 3, 3), None, None),
])
def test_matmul_two_variable_operands(shape, left, right):
    assert_gradient(_two_operand_model("MatMul", None, shape, left, right), shape, channels=(0, 1))


def test_matmul_of_a_row_and_a_matrix_from_the_input():
    """y [1, m] = a [1, k] · B [k, m], both from x: B has no batch axis; each reverse row gets its own dB."""
    shape = (1, 12)
    left = lambda i, o: onnx.helper.make_node("Slice", [i, "s0", "e0", "ax"], [o])  # noqa: E731
    right = lambda i, o: onnx.helper.make_node("Reshape", [i, "to"], [o])  # noqa: E731
    model = _two_operand_model("MatMul", None, shape, left, right)
    model.graph.initializer.extend([ints("s0", [0]), ints("e0", [4]), ints("ax", [1]), ints("to", [4, 3])])
    assert_gradient(model, shape, channels=(0, 2))


# ---------------------------------------------------------------- quantization: straight-through


def _qdq_model(shape, q_scale, dq_scale, axis, conv=True, opset=13):
    """x → QuantizeLinear → DequantizeLinear (→ Conv): scales per tensor (a scalar) or per axis."""
    c = shape[1]
    zp = np.zeros(np.shape(q_scale), np.int8) + 3
    inits = [floats("qs", q_scale), floats("ds", dq_scale), numpy_helper.from_array(zp, "zp"),
             floats("W", np.random.default_rng(2).standard_normal((2, c, 3, 3)))]
    kw = {} if np.ndim(q_scale) == 0 else {"axis": axis}
    nodes = [onnx.helper.make_node("QuantizeLinear", ["x", "qs", "zp"], ["q"], **kw),
             onnx.helper.make_node("DequantizeLinear", ["q", "ds", "zp"], ["d"], **kw)]
    nodes.append(onnx.helper.make_node("Conv", ["d", "W"], ["y"]) if conv else onnx.helper.make_node("Identity", ["d"], ["y"]))
    g = RM.helper.make_graph(nodes, "qdq", [RM.helper.make_tensor_value_info("x", RM.FLOAT, list(shape))],
                             [RM.helper.make_tensor_value_info("y", RM.FLOAT, None)], inits)
    model = RM.helper.make_model(g, opset_imports=[RM.helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


@pytest.mark.parametrize("opset", [13, 19])
@pytest.mark.parametrize("q_scale,dq_scale", [(0.05, 0.2), ([0.05, 0.1, 0.02], [0.5, 0.1, 0.3])])
def test_quantize_dequantize_are_their_scales(opset, q_scale, dq_scale):
    """Q then DQ: R·dq_scale/q_scale (per channel for per-axis scales); the rounding passes straight through."""
    shape = (1, 3, 4, 5)
    model = _qdq_model(shape, q_scale, dq_scale, axis=1, conv=False, opset=opset)
    p = Projector(model, analyse(model), "x", "y", "backprop")
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    R = np.random.default_rng(1).standard_normal((2, *shape[1:])).astype(np.float32)
    back = p.run_reverse(R, p.forward(x))
    ratio = (np.asarray(dq_scale, np.float32) / np.asarray(q_scale, np.float32)).reshape(-1, 1, 1)
    np.testing.assert_allclose(back, R * ratio, rtol=1e-6)


@pytest.mark.parametrize("mode", ["backprop", "deconvnet", "guided"])
@pytest.mark.parametrize("scale", [0.05, [0.05, 0.1, 0.02]])
def test_a_qdq_pair_is_the_identity_in_reverse(mode, scale):
    """A QDQ pair with one scale before a Conv: the reverse pass equals the float Conv's, in every mode."""
    shape = (1, 3, 6, 6)
    quant = _qdq_model(shape, scale, scale, axis=1)
    plain = one_op("Conv", shape, [floats("W", np.random.default_rng(2).standard_normal((2, 3, 3, 3)))])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    R = np.random.default_rng(1).standard_normal((3, 2, 4, 4)).astype(np.float32)
    back = []
    for model in (quant, plain):
        p = Projector(model, analyse(model), "x", "y", mode)
        back.append(p.run_reverse(R, p.forward(x)))
    np.testing.assert_allclose(back[0], back[1], rtol=1e-5, atol=1e-6 * np.abs(back[1]).max())


# ---------------------------------------------------------------- Resize: cubic, antialias, crop-and-resize


def _make_resize_modes(rng):
    """Cubic (either coefficient, exclude_outside), antialiased linear and cubic, and
    tf_crop_and_resize in every mode; scales or sizes; opset 19."""
    mode = str(rng.choice(["cubic", "cubic", "linear", "nearest"]))
    ctms = ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel", "half_pixel_symmetric", "tf_crop_and_resize"]
    ctm = "tf_crop_and_resize" if mode == "nearest" else str(rng.choice(ctms))
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm}
    if mode == "cubic":
        attrs["cubic_coeff_a"] = float(rng.choice([-0.75, -0.5]))
        attrs["exclude_outside"] = int(rng.integers(0, 2))
    if mode != "nearest" and ctm != "tf_crop_and_resize":
        attrs["antialias"] = int(rng.integers(0, 2))
    if ctm == "tf_crop_and_resize":
        attrs["extrapolation_value"] = 0.0  # (another value adds a constant: y is then affine, not linear)
    shape = (1, int(rng.integers(1, 3)), *[int(v) for v in rng.integers(3, 9, 2)])
    roi = ([0, 0, *rng.uniform(-0.2, 0.4, 2), 1, 1, *rng.uniform(0.6, 1.2, 2)] if ctm == "tf_crop_and_resize" else [])
    inits = [floats("roi", roi)]
    if rng.random() < 0.5:
        inits.append(ints("sizes", [1, shape[1], *[int(v) for v in rng.integers(2, 15, 2)]]))
        extra = ["roi", "", "sizes"]
    else:
        inits.append(floats("scales", [1, 1, *rng.choice([0.5, 0.75, 1.0, 1.5, 2.0, 3.0], 2)]))
        extra = ["roi", "scales"]
    model = one_op("Resize", shape, extra_inputs=extra, opset=19, **attrs)
    model.graph.initializer.extend(inits)
    return model, shape, ("Resize", shape, attrs, [numpy_helper.to_array(t).tolist() for t in inits])


def test_adjoint_of_resize_in_every_mode():
    _sweep(_make_resize_modes, 40, seed=16)


@pytest.mark.parametrize("axes", [[2, 3], [3]])
def test_adjoint_of_cubic_resize_with_axes(axes):
    """Opset 18's axes: scales for the listed axes only."""
    shape = (1, 2, 5, 6)
    scales = floats("scales", [1.5, 0.75][-len(axes):])
    model = one_op("Resize", shape, extra_inputs=["", "scales"], opset=18, mode="cubic", axes=axes)
    model.graph.initializer.append(scales)
    assert_adjoint(model, shape)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_crop_and_resize_extrapolated_places_get_no_signal(mode):
    """tf_crop_and_resize with a region reaching past the input: the places filled with
    extrapolation_value are constants (finite differences of the whole op)."""
    shape = (1, 2, 6, 5)
    model = one_op("Resize", shape, extra_inputs=["roi", "", "sizes"], opset=19, mode=mode,
                   coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=0.5)
    model.graph.initializer.extend([floats("roi", [0, 0, -0.3, 0.1, 1, 1, 0.9, 1.4]), ints("sizes", [1, 2, 7, 8])])
    assert_gradient(model, shape, channels=(0, 1))


# ---------------------------------------------------------------- along the batch axis: one signal shaped as the output


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


@pytest.mark.parametrize("shape,axis", [((1, 3, 4), 0), ((3, 4), 0), ((2, 3, 2), -3), ((2, 3, 2), 0)])
def test_layer_normalization_over_the_batch_axis(shape, axis):
    c = int(np.prod(shape[axis % len(shape):]))
    sub = shape[axis % len(shape):]
    rng = np.random.default_rng(3)
    model = one_op("LayerNormalization", shape, [floats("scale", rng.uniform(0.5, 2, sub)), floats("bias", rng.standard_normal(sub))],
                   axis=axis, epsilon=1e-3)
    assert c > 1
    assert_full_gradient(_weighted(model), shape)


@pytest.mark.parametrize("shape", [(1, 3), (3, 4)])
@pytest.mark.parametrize("p", [1, 2])
def test_lp_normalization_along_the_batch_axis(shape, p):
    assert_full_gradient(_weighted(one_op("LpNormalization", shape, axis=0, p=p)), shape)


@pytest.mark.parametrize("eq,shape", [("bii->bi", (1, 3, 3)), ("bii->b", (1, 4, 4)), ("bcii,bcjj->bcij", (1, 2, 3, 3))])
def test_einsum_diagonals(eq, shape):
    """A repeated subscript reads a diagonal: its signal goes back onto the diagonal only."""
    n_in = eq.split("->")[0].count(",") + 1
    ins = ["x"] if n_in == 1 else ["x", "s"]
    nodes = ([onnx.helper.make_node("Sin", ["x"], ["s"])] if n_in == 2 else []) + [
        onnx.helper.make_node("Einsum", ins, ["y"], equation=eq)]
    g = RM.helper.make_graph(nodes, "e", [RM.helper.make_tensor_value_info("x", RM.FLOAT, list(shape))],
                             [RM.helper.make_tensor_value_info("y", RM.FLOAT, None)])
    model = RM.helper.make_model(g, opset_imports=[RM.helper.make_opsetid("", 12)])
    model.ir_version = 7
    assert_full_gradient(model, shape)


@pytest.mark.parametrize("eq,shape", [("ij->ji", (3, 4)), ("bij,bjk->kib", (2, 3, 4))])
def test_einsum_moving_the_batch_axis(eq, shape):
    nodes = [onnx.helper.make_node("Tanh", ["x"], ["t"]),
             onnx.helper.make_node("Einsum", ["x"] if "," not in eq else ["x", "t2"], ["y"], equation=eq)]
    if "," in eq:
        nodes.insert(1, onnx.helper.make_node("Transpose", ["t"], ["t2"], perm=[0, 2, 1]))
    g = RM.helper.make_graph(nodes, "e", [RM.helper.make_tensor_value_info("x", RM.FLOAT, list(shape))],
                             [RM.helper.make_tensor_value_info("y", RM.FLOAT, None)])
    model = RM.helper.make_model(g, opset_imports=[RM.helper.make_opsetid("", 12)])
    model.ir_version = 7
    assert_full_gradient(model, shape)


@pytest.mark.parametrize("shape,w,x_left", [((2, 3, 4), (4,), True), ((2, 3, 4), (3,), False), ((4,), (2, 4, 3), True),
                                            ((3,), (3, 5), True)])
def test_matmul_with_a_vector(shape, w, x_left):
    """A 1-D operand (numpy's rule: a row on the left, a column on the right, that axis dropped)."""
    ins = ["x", "W"] if x_left else ["W", "x"]
    node = onnx.helper.make_node("MatMul", ins, ["y"])
    g = RM.helper.make_graph([node], "m", [RM.helper.make_tensor_value_info("x", RM.FLOAT, list(shape))],
                             [RM.helper.make_tensor_value_info("y", RM.FLOAT, None)],
                             [floats("W", np.random.default_rng(1).standard_normal(w))])
    model = RM.helper.make_model(g, opset_imports=[RM.helper.make_opsetid("", 13)])
    model.ir_version = 7
    assert_vjp(model, shape)


@pytest.mark.parametrize("policy", ["not_larger", "not_smaller"])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_adjoint_of_resize_keeping_the_aspect_ratio(policy, mode):
    """keep_aspect_ratio_policy: one scale for the listed axes, from the sizes asked for."""
    shape = (1, 2, 6, 4)
    model = one_op("Resize", shape, extra_inputs=["", "", "sizes"], opset=18, mode=mode, axes=[2, 3],
                   keep_aspect_ratio_policy=policy, coordinate_transformation_mode="asymmetric")
    model.graph.initializer.append(ints("sizes", [8, 9]))  # one scale: 4/3 (not_larger) or 9/4
    assert_adjoint(model, shape)
