"""LSTM, GRU and RNN reverse rules (backpropagation through time, unrolled): the backprop pass of
a one-node model equals central finite differences of ⟨R, y(x)⟩ on onnxruntime, for every
direction, peepholes, input_forget, linear_before_reset, initial states and each output (Y, Y_h,
Y_c); the gates are not ReLU-family, so the three modes agree; what the rule refuses is refused
with one clear error.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_reverse_fd import check_gradient

from cnncli.engine.project import Projector
from cnncli.errors import UnsupportedError
from cnncli.frontend.graph import analyse

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
OUTS = {"LSTM": ["Y", "Y_h", "Y_c"], "GRU": ["Y", "Y_h"], "RNN": ["Y", "Y_h"]}


def _model(op, seq=4, batch=2, n_in=3, hidden=5, direction="forward", target="Y", peep=False, init=False,
           seed=0, extra=(), **attrs):
    """x [seq, batch, n_in] → op → ``target``; weights (bias, initial states, peepholes) stored."""
    rng = np.random.default_rng(seed)
    n_dir = 2 if direction == "bidirectional" else 1
    g = GATES[op]

    def init_(name, shape):
        return numpy_helper.from_array(rng.uniform(-0.8, 0.8, shape).astype(np.float32), name)

    inits = [init_("W", (n_dir, g * hidden, n_in)), init_("R", (n_dir, g * hidden, hidden)),
             init_("B", (n_dir, 2 * g * hidden))]
    inputs = ["x", "W", "R", "B", "", "", ""]
    if init:
        inits.append(init_("h0", (n_dir, batch, hidden)))
        inputs[5] = "h0"
        if op == "LSTM":
            inits.append(init_("c0", (n_dir, batch, hidden)))
            inputs[6] = "c0"
    if peep:
        inits.append(init_("P", (n_dir, 3 * hidden)))
        inputs.append("P")
    for name, value in extra:
        inits.append(numpy_helper.from_array(value, name))
    while inputs[-1] == "":
        inputs.pop()
    outs = [o if o == target else "" for o in OUTS[op]]
    while outs[-1] == "":
        outs.pop()
    node = helper.make_node(op, inputs, outs, hidden_size=hidden, direction=direction, **attrs)
    graph = helper.make_graph([node], "one", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, batch, n_in])],
                              [helper.make_tensor_value_info(target, TensorProto.FLOAT, None)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


class InnerProduct:
    """⟨R, y(x)⟩ from onnxruntime runs, for test_reverse_fd.check_gradient (x with a leading axis of 1)."""

    def __init__(self, model, target, R):
        self.session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        self.target, self.R = target, R.astype(np.float64)

    def value(self, x):
        y = self.session.run([self.target], {"x": x[0].astype(np.float32)})[0]
        return float(np.sum(self.R * y.astype(np.float64)))

    def differences(self, x, d, eps, one_sided=False):
        plus, minus = self.value(x + eps * d), self.value(x - eps * d)
        if not one_sided:
            return [(plus - minus) / (2 * eps)]
        mid = self.value(x)
        return [(plus - mid) / eps, (mid - minus) / eps]


def _reverse(model, target, R, x, mode="backprop"):
    p = Projector(model, analyse(model), "x", target, mode)
    return p.run_reverse(R, p.forward(x)).astype(np.float64)


CONFIGS = {
    "lstm_forward": ("LSTM", {}),
    "lstm_forward_init_peep": ("LSTM", dict(init=True, peep=True)),
    "lstm_reverse": ("LSTM", dict(direction="reverse", init=True, peep=True)),
    "lstm_bidirectional": ("LSTM", dict(direction="bidirectional", init=True, peep=True)),
    "lstm_input_forget": ("LSTM", dict(input_forget=1, peep=True, init=True)),
    "lstm_Y_h": ("LSTM", dict(target="Y_h", init=True, peep=True)),
    "lstm_Y_c": ("LSTM", dict(target="Y_c", init=True, peep=True)),
    "lstm_bidirectional_Y_c": ("LSTM", dict(target="Y_c", direction="bidirectional", peep=True)),
    "gru_forward": ("GRU", dict(init=True)),
    "gru_linear_before_reset": ("GRU", dict(init=True, linear_before_reset=1)),
    "gru_reverse": ("GRU", dict(direction="reverse")),
    "gru_bidirectional_lbr": ("GRU", dict(direction="bidirectional", linear_before_reset=1, init=True)),
    "gru_Y_h": ("GRU", dict(target="Y_h", direction="bidirectional")),
    "rnn_forward": ("RNN", dict(init=True)),
    "rnn_bidirectional": ("RNN", dict(direction="bidirectional", init=True)),
    "rnn_Y_h": ("RNN", dict(target="Y_h", direction="reverse")),
    "lstm_explicit_default_activations": ("LSTM", dict(activations=["Sigmoid", "Tanh", "Tanh"])),
    "lstm_full_sequence_lens": ("LSTM", dict(extra=[("lens", np.full(2, 4, np.int32))])),
}


def _with_lens(op, kw):
    """A sequence_lens input stored as a constant (slot 4)."""
    extra = kw.get("extra", ())
    if not extra:
        return _model(op, **kw)
    m = _model(op, **kw)
    node = m.graph.node[0]
    ins = list(node.input) + [""] * (5 - len(node.input))
    ins[4] = extra[0][0]
    del node.input[:]
    node.input.extend(ins)
    return m


@pytest.mark.parametrize("name", list(CONFIGS))
def test_backprop_equals_finite_differences(name):
    op, kw = CONFIGS[name]
    model = _with_lens(op, kw)
    target = kw.get("target", "Y")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run([target], {"x": x})[0]
    R = rng.standard_normal(y.shape).astype(np.float32)  # one signal shaped as the output (time mixes)
    grad = _reverse(model, target, R, x)
    assert grad.shape == x.shape and np.abs(grad).max() > 0
    check_gradient(InnerProduct(model, target, R), x[None], grad, rng, name)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_modes_agree(op):
    """No ReLU-family activation inside: deconvnet and guided are the gradient too."""
    model = _model(op, direction="bidirectional", init=True)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    R = rng.standard_normal((4, 2, 2, 5)).astype(np.float32)
    ref = _reverse(model, "Y", R, x)
    for mode in ("deconvnet", "guided"):
        np.testing.assert_allclose(_reverse(model, "Y", R, x, mode), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op,target", [("LSTM", "Y"), ("LSTM", "Y_h"), ("GRU", "Y"), ("RNN", "Y_h")])
def test_one_step_sequence_keeps_the_rows(op, target):
    """A sequence of length 1: several signals (rows) stacked on the first axis, each its own gradient."""
    model = _model(op, seq=1, batch=3, n_in=5, target=target, init=True)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 3, 5)).astype(np.float32)
    R = rng.standard_normal((3, *((1, 3, 5) if target == "Y" else (3, 5)))).astype(np.float32)
    grads = _reverse(model, target, R, x)
    assert grads.shape == (3, 3, 5)
    for k in range(3):
        row = R[k:k + 1]
        check_gradient(InnerProduct(model, target, row), x[None], grads[k:k + 1], rng, f"{op} row {k}")


@pytest.mark.parametrize("attrs,why", [
    (dict(clip=1.0), "with clip is not"),
    (dict(activations=["Relu", "Tanh", "Tanh"]), "with activations .* not supported"),
    (dict(extra=[("lens", np.asarray([4, 2], np.int32))]), "with sequence_lens other than"),
    (dict(layout=1), "with layout 1 is not"),
])
def test_refused(attrs, why):
    model = _with_lens("LSTM", attrs)
    with pytest.raises(UnsupportedError, match=why):
        Projector(model, analyse(model), "x", "Y", "backprop")


def test_several_channels_through_a_crnn_head():
    """The sequence axis is first, so the reverse takes one signal per run: projecting several
    channels at once runs them one by one, each as it would be alone."""
    import reverse_models as RM

    case = RM.recurrent_crnn()
    p = Projector(case.model, analyse(case.model), "x", case.target, "backprop")
    x = case.input()
    together = p.project(x, [0, 1, 2], keep="map")
    assert [r.channel for r in together] == [0, 1, 2]
    for r in together:
        alone = p.project(x, [r.channel], keep="map")[0].projection
        assert np.abs(alone).max() > 0
        np.testing.assert_allclose(r.projection, alone, rtol=1e-6, atol=1e-7)
