"""Reverse rules of onnxruntime's dynamic quantization (issue 16): DynamicQuantizeLinear →
ConvInteger / MatMulInteger → Cast → Mul by the scale product, the graph quantize_dynamic writes.

A quantized model is piecewise constant in x; its straight-through estimator (rounding passed
straight through, the scales held constant) equals the gradient of the float model whose weights
are float(w_q − w_zero_point)·w_scale, times DynamicQuantizeLinear's clip mask (no signal where
x/scale + zero point leaves [0, 255], which the zero point's rounding can make x's extremes do).
Checked here against the float Conv/MatMul's reverse (itself checked by finite differences).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from cnncli.engine.project import Projector
from cnncli.frontend.graph import analyse

MODES = ("backprop", "deconvnet", "guided")  # no ReLU on the path: all three are the gradient


def _input(shape, seed=0):
    """Values in [-0.3, 1.0] with both ends present: scale 1.3/255, zero point round(58.85) = 59,
    so the range that passes is [-59·s, 196·s] ≈ [-0.3008, 0.9992] and x = 1.0 clips."""
    x = np.random.default_rng(seed).uniform(-0.29, 0.99, shape).astype(np.float32)
    x.flat[0], x.flat[1] = -0.3, 1.0
    return x


def _inside(x):
    """DynamicQuantizeLinear's unclipped range, as the ONNX spec computes scale and zero point."""
    lo, hi = min(0.0, float(x.min())), max(0.0, float(x.max()))
    s = np.float32((hi - lo) / 255)
    zp = np.clip(np.round(-lo / s), 0, 255)
    return (x >= -zp * s) & (x <= (255 - zp) * s)


def _model(op, shape, w_q, w_zp, w_scale, out_shape, **attrs):
    """x → DynamicQuantizeLinear → op(x_q, w_q, x_zp, w_zp) → Cast → Mul(x_scale·w_scale) → y."""
    inits = [numpy_helper.from_array(w_q, "w_q"), numpy_helper.from_array(w_zp, "w_zp"),
             numpy_helper.from_array(np.asarray(w_scale, np.float32), "w_scale")]
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["x_q", "x_scale", "x_zp"]),
             helper.make_node("Mul", ["x_scale", "w_scale"], ["scales"]),
             helper.make_node(op, ["x_q", "w_q", "x_zp", "w_zp"], ["acc"], **attrs),
             helper.make_node("Cast", ["acc"], ["acc_f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["acc_f", "scales"], ["y"])]
    g = helper.make_graph(nodes, "dyn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model


def _float_model(op, shape, w, out_shape, **attrs):
    g = helper.make_graph([helper.make_node(op, ["x", "w"], ["y"], **attrs)], "float",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
                          [numpy_helper.from_array(w.astype(np.float32), "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model


def _reverse(model, mode, x, R):
    p = Projector(model, analyse(model), "x", "y", mode)
    return p.run_reverse(R, p.forward(x))


def _check(quant, plain, mode, x, R):
    inside = _inside(x)
    assert 0 < inside.mean() < 1  # the input's maximum clips: the mask is exercised
    back = _reverse(quant, mode, x, R)
    want = _reverse(plain, "backprop", x, R) * inside[0]
    np.testing.assert_allclose(back, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("w_dtype", [np.uint8, np.int8])
def test_conv_integer_is_the_float_conv_in_reverse(mode, w_dtype):
    """uint8 and int8 weights with a zero point, strided and padded (onnxruntime's ConvInteger
    takes one weight zero point only)."""
    shape, m = (1, 3, 7, 6), 4
    rng = np.random.default_rng(5)
    info = np.iinfo(w_dtype)
    w_q = rng.integers(info.min, info.max + 1, (m, 3, 3, 3)).astype(w_dtype)
    w_zp = np.asarray(rng.integers(-20, 20) + (128 if w_dtype == np.uint8 else 0), w_dtype)
    attrs = {"strides": [2, 1], "pads": [1, 0, 1, 1], "kernel_shape": [3, 3]}
    out = (1, m, 4, 5)
    quant = _model("ConvInteger", shape, w_q, w_zp, 0.01, out, **attrs)
    w_f = (w_q.astype(np.float64) - w_zp.astype(np.float64)) * 0.01
    plain = _float_model("Conv", shape, w_f, out, **attrs)
    R = np.random.default_rng(1).standard_normal((2, *out[1:])).astype(np.float32)
    _check(quant, plain, mode, _input(shape), R)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(1, 6), (1, 4, 6)])
@pytest.mark.parametrize("per_column", [False, True])
def test_matmul_integer_is_the_float_matmul_in_reverse(mode, shape, per_column):
    """Weights [6, 5] with one zero point or one per column; a 2-D and a 3-D left operand."""
    rng = np.random.default_rng(7)
    w_q = rng.integers(-128, 128, (6, 5)).astype(np.int8)
    w_zp = rng.integers(-10, 10, 5).astype(np.int8)
    w_zp = w_zp if per_column else w_zp[:1].reshape(())
    out = (*shape[:-1], 5)
    quant = _model("MatMulInteger", shape, w_q, w_zp, 0.02, out)
    plain = _float_model("MatMul", shape, (w_q.astype(np.float64) - w_zp.astype(np.float64)) * 0.02, out)
    R = np.random.default_rng(1).standard_normal((3, *out[1:])).astype(np.float32)
    _check(quant, plain, mode, _input(shape), R)
