"""Elementwise ops on a tensor without the batch axis (issue 16): after a Squeeze of the batch, a
[C, H, W] tensor meets Sigmoid, Mul, Tanh…; projecting several channels at once stacks the reverse
rows on its first axis ([K·C, H, W]), which the forward [C, H, W] did not broadcast against
(`cnn project` failed: "Attempting to broadcast an axis by a dimension other than 1"). Backprop is
checked against float64 finite differences, several channels at once against one at a time, and
the three modes on a path without ReLU against each other."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

import cnncli
from cnncli.cli import cli


def _model(dtype=np.float32) -> onnx.ModelProto:
    """x [1, 3, 4, 4] → s = Squeeze(x) [3, 4, 4] → Sigmoid(s)·w[3,1,1]·s → Tanh, + b[4] → back to
    [1, 3, 4, 4], times x (a batched and a batchless operand together)."""
    rng = np.random.default_rng(9)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inits = [numpy_helper.from_array(np.asarray(v, dtype), k) for k, v in
             (("w", rng.standard_normal((3, 1, 1))), ("b", rng.standard_normal(4) * 0.3))]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "ax"))
    nodes = [
        helper.make_node("Squeeze", ["x", "ax"], ["s"]),
        helper.make_node("Sigmoid", ["s"], ["g"]),
        helper.make_node("Mul", ["g", "w"], ["gw"]),
        helper.make_node("Mul", ["gw", "s"], ["p"]),
        helper.make_node("Tanh", ["p"], ["t"]),
        helper.make_node("Add", ["t", "b"], ["tb"]),
        helper.make_node("Unsqueeze", ["tb", "ax"], ["u"]),
        helper.make_node("Mul", ["u", "x"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "batchless", [helper.make_tensor_value_info("x", elem, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", elem, [1, 3, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _fd(channel: int, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """∇ ½·Σ y[0, channel]² of the float64 model, by central differences."""
    sess = ort.InferenceSession(_model(np.float64).SerializeToString(), providers=["CPUExecutionProvider"])
    loss = lambda v: 0.5 * float(np.sum(sess.run(["y"], {"x": v})[0][0, channel] ** 2))  # noqa: E731
    g = np.zeros(x.size)
    for q in range(x.size):
        e = np.zeros(x.size)
        e[q] = eps
        g[q] = (loss(x + e.reshape(x.shape)) - loss(x - e.reshape(x.shape))) / (2 * eps)
    return g.reshape(x.shape[1:])


X = np.random.default_rng(4).standard_normal((1, 3, 4, 4)).astype(np.float32)


def test_several_channels_at_once_equal_finite_differences():
    together = cnncli.project(_model(), X, tensor="y", channels=[0, 1, 2], mode="backprop")
    for p in together:
        want = _fd(p.channel, X.astype(np.float64))
        np.testing.assert_allclose(p.array, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
        alone = cnncli.project(_model(), X, tensor="y", channels=[p.channel], mode="backprop")
        np.testing.assert_allclose(p.array, alone[0].array, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", ["deconvnet", "guided"])
def test_no_relu_on_the_path_every_mode_is_the_gradient(mode):
    got = np.stack([p.array for p in cnncli.project(_model(), X, tensor="y", channels=[0, 2], mode=mode)])
    want = np.stack([p.array for p in cnncli.project(_model(), X, tensor="y", channels=[0, 2], mode="backprop")])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_cnn_project_runs_all_channels(tmp_path):
    onnx.save(_model(), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", X)
    r = CliRunner().invoke(cli, ["project", str(tmp_path / "m.onnx"), str(tmp_path / "x.npy"), "--tensor", "y",
                                 "--channel", "all", "--format", "json", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.stderr
    assert [row["channel"] for row in json.loads(r.stdout)["results"]] == [0, 1, 2]


def test_every_op_lifted_has_a_rule():
    from cnncli.reverse import RULES
    from cnncli.reverse.rules import ELEMENTWISE

    assert sorted(ELEMENTWISE - set(RULES)) == []
