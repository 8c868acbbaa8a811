"""Issue 16's last reverse rules: the function-body ops (Attention, RotaryEmbedding, the losses,
CausalConvWithState, LinearAttention, SwiGLU), the copies (Scatter, TensorScatter, Unique,
Compress) and the spectral transforms (DFT, STFT). The node tests and reverse_models_llm.py's FD
cases check most; here: `cnn project --mode backprop` end to end through a tiny attention model
against float64 finite differences, the three modes alike (no ReLU: nothing rectifies), DFT and
STFT on their node tests (their schemas mark the input non-differentiable, so node_coverage.py
skips them), SwiGLU (onnxruntime cannot run it) against numpy, and the shapes the front end now
knows (Compress with a constant condition, STFT's default one-sided bins, a declared Unique length).
"""

from __future__ import annotations

import json

import node_cases as NCASES
import node_coverage as NC
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import cnncli
from cnncli.cli import cli
from cnncli.frontend.graph import analyse
from cnncli.reverse import build_reverse


def _attention_model(dtype=np.float32) -> onnx.ModelProto:
    """x [1, 3, 4, 4] → 16 tokens of 3 → q [.., 8], k, v [.., 4] → Attention (2 query heads on
    1 kv head, causal, softcap 3) → y [1, 4, 4, 4] (the value width as channels)."""
    rng = np.random.default_rng(5)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    w = {name: rng.standard_normal(shape) * 0.6 for name, shape in (("wq", (3, 8)), ("wk", (3, 4)), ("wv", (3, 4)), ("wo", (8, 4)))}
    inits = [numpy_helper.from_array(v.astype(dtype), k) for k, v in w.items()]
    inits += [numpy_helper.from_array(np.asarray(v, np.int64), k) for k, v in (("tok", [1, 3, 16]), ("img", [1, 4, 4, 4]))]
    nodes = [
        helper.make_node("Reshape", ["x", "tok"], ["t3"]),
        helper.make_node("Transpose", ["t3"], ["t"], perm=[0, 2, 1]),                   # [1, 16, 3]
        *[helper.make_node("MatMul", ["t", f"w{c}"], [c]) for c in "qkv"],
        helper.make_node("Attention", ["q", "k", "v"], ["a"], q_num_heads=2, kv_num_heads=1, is_causal=1, softcap=3.0),
        helper.make_node("MatMul", ["a", "wo"], ["o"]),                                  # [1, 16, 4]
        helper.make_node("Transpose", ["o"], ["ot"], perm=[0, 2, 1]),
        helper.make_node("Reshape", ["ot", "img"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("x", elem, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", elem, [1, 4, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 10
    return model


def _grad_of_half_square(model: onnx.ModelProto, x: np.ndarray, channel: int, eps: float = 1e-5) -> np.ndarray:
    """∇ ½·Σ y[0, channel]² by float64 central differences on onnxruntime."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def loss(v):
        return 0.5 * float(np.sum(sess.run(["y"], {"x": v})[0][0, channel] ** 2))

    g = np.zeros(x.size)
    for q in range(x.size):
        e = np.zeros(x.size)
        e[q] = eps
        g[q] = (loss(x + e.reshape(x.shape)) - loss(x - e.reshape(x.shape))) / (2 * eps)
    return g.reshape(x.shape)


def test_cnn_project_backprop_through_attention_equals_finite_differences(tmp_path):
    model = tmp_path / "attn.onnx"
    onnx.save(_attention_model(), model)
    x = np.random.default_rng(1).standard_normal((1, 3, 4, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = CliRunner().invoke(cli, ["project", str(model), str(tmp_path / "x.npy"), "--tensor", "y", "--channel", "1,3",
                                 "--mode", "backprop", "--save-npy", "--format", "json", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)["results"]
    assert [row["channel"] for row in rows] == [1, 3]
    double = _attention_model(np.float64)
    for row in rows:
        got = np.load(tmp_path / "o" / row["files"]["npy"]).astype(np.float64).reshape(3, 4, 4)  # (relative to --out)
        want = _grad_of_half_square(double, x.astype(np.float64), row["channel"])[0]
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


def test_attention_projects_the_same_in_every_mode():
    """Attention is no ReLU: deconvnet and guided do not rectify through it (the exact gradient)."""
    x = np.random.default_rng(2).standard_normal((1, 3, 4, 4)).astype(np.float32)
    out = {mode: np.stack([p.array for p in cnncli.project(_attention_model(), x, tensor="y", channels=[0, 2], mode=mode)])
           for mode in ("backprop", "deconvnet", "guided")}
    assert np.abs(out["backprop"]).max() > 0
    for mode in ("deconvnet", "guided"):
        np.testing.assert_allclose(out[mode], out["backprop"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("op", ["DFT", "STFT"])
def test_dft_and_stft_node_tests_equal_finite_differences(op):
    cases = NCASES.collect(op).cases
    assert cases
    for case in cases:
        outcome = NC.check_reverse_input(case, case.model.graph.input[0].name)
        assert (outcome.status, outcome.why) == ("pass", "float64"), (case.name, outcome)


def _swiglu(alpha: float, shape) -> onnx.ModelProto:
    node = helper.make_node("SwiGLU", ["a", "b"], ["y"], alpha=alpha)
    vis = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(shape)) for n in ("a", "b")]
    graph = helper.make_graph([node], "swiglu", vis, [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 28)])
    model.ir_version = 11
    return model


def test_swiglu_onnxruntime_cannot_run_it_and_its_rule_is_the_gradient():
    model = _swiglu(1.5, (1, 4, 5))
    with pytest.raises(Exception, match="Swish|SwiGLU|NOT_IMPLEMENTED|not implemented"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    a, bv, R = (rng.standard_normal((1, 4, 5)) for _ in range(3))

    def y(a_, b_):
        return a_ / (1 + np.exp(-1.5 * a_)) * b_

    for wrt, other in (("a", "b"), ("b", "a")):
        rev = build_reverse(analyse(model), "y", "backprop", wrt)
        feeds = {"seed": R.astype(np.float32), wrt: (a if wrt == "a" else bv).astype(np.float32),
                 other: (bv if other == "b" else a).astype(np.float32)}
        sess = ort.InferenceSession(rev.model.SerializeToString(), providers=["CPUExecutionProvider"])
        got = sess.run(["projection"], {k: v for k, v in feeds.items() if k in rev.needed or k == "seed"})[0]
        eps, want = 1e-6, np.zeros(a.size)
        for q in range(a.size):
            e = np.zeros(a.size)
            e[q] = eps
            e = e.reshape(a.shape)
            hi = y(a + e, bv) if wrt == "a" else y(a, bv + e)
            lo = y(a - e, bv) if wrt == "a" else y(a, bv - e)
            want[q] = np.sum(R * (hi - lo)) / (2 * eps)
        np.testing.assert_allclose(got.reshape(-1), want, rtol=1e-4, atol=1e-5)


def _one_node(op: str, x_shape, inits: list, extra_in: list, **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, ["x", *extra_in], ["y"], **attrs)
    relu = helper.make_node("Relu", ["y"], ["z"])
    graph = helper.make_graph([node, relu], op.lower(), [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_front_end_sizes_compress_with_a_constant_condition():
    cond = numpy_helper.from_array(np.array([1, 0, 1, 1, 0], bool), "c")
    g = analyse(_one_node("Compress", (1, 5, 3), [cond], ["c"], axis=1))
    assert g.shape("y") == (1, 3, 3) and g.shape("z") == (1, 3, 3)
    rev = build_reverse(g, "z", "backprop", "x")  # (refused before: the shape of 'y' was unknown)
    assert rev.needed


def test_the_front_end_gives_stft_its_default_one_sided_bins():
    inits = [numpy_helper.from_array(np.asarray(v, np.int64), k) for k, v in (("step", 8), ("len", 16))]
    g = analyse(_one_node("STFT", (1, 128, 1), inits, ["step", "", "len"]))
    assert g.shape("y") == (1, 15, 9, 2)  # onnx's inference says 16 bins: it takes onesided's default as 0
