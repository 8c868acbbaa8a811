"""Reverse rules of issue 16's numeric ops: Instance, Group and LpNormalization, LpPool and
GlobalLpPool, MatMul and Einsum of two variable operands (diagonals, 1-D operands), Quantize/
DequantizeLinear (straight-through), Resize in cubic, antialias, crop-and-resize and kept-aspect
modes: one-node models checked on onnxruntime runs of the forward op, with the helpers of
test_reverse_structural.py (finite differences of a weighted ½·Σ y², the dot-product test).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import reverse_models as RM
from onnx import numpy_helper
from test_reverse_fd import _sweep
from test_reverse_structural import (_weighted, assert_adjoint, assert_full_gradient, assert_gradient, assert_vjp, floats,
                                     ints, one_op)

from cnncli.engine.project import Projector
from cnncli.frontend.graph import analyse


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


# ---------------------------------------------------------------- over the batch axis, 1-D operands, aspect ratio


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


@pytest.mark.parametrize("mode", ["backprop", "deconvnet", "guided"])
@pytest.mark.parametrize("zero_point", [-128, 3])
def test_quantize_linear_clips(mode, zero_point):
    """Where x/scale + zero point leaves int8's range, QuantizeLinear clips: no signal goes back
    there. A zero point of -128 clips at 0, the ReLU onnxruntime's quantizer folds in: deconvnet
    and guided rectify there, as at a ReLU."""
    shape, scale = (1, 2, 4, 4), 0.02
    q = onnx.helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"])
    dq = onnx.helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"])
    g = RM.helper.make_graph([q, dq], "q", [RM.helper.make_tensor_value_info("x", RM.FLOAT, list(shape))],
                             [RM.helper.make_tensor_value_info("y", RM.FLOAT, None)],
                             [floats("s", scale), numpy_helper.from_array(np.asarray(zero_point, np.int8), "zp")])
    model = RM.helper.make_model(g, opset_imports=[RM.helper.make_opsetid("", 13)])
    model.ir_version = 7
    x = np.random.default_rng(0).uniform(-4, 4, shape).astype(np.float32)
    R = np.random.default_rng(1).standard_normal((2, *shape[1:])).astype(np.float32)
    p = Projector(model, analyse(model), "x", "y", mode)
    back = p.run_reverse(R, p.forward(x))
    inside = (x[0] > (-128 - zero_point) * scale) & (x[0] < (127 - zero_point) * scale)
    assert 0 < inside.mean() < 1
    rectify = zero_point == -128 and mode != "backprop"
    expected = (np.maximum(R, 0) if rectify else R) * (inside if mode != "deconvnet" or not rectify else 1)
    np.testing.assert_allclose(back, expected, rtol=1e-6, atol=1e-6)
