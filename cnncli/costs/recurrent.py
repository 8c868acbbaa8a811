"""Cost rules for the recurrent layers: LSTM, GRU, RNN (ONNX standard) and onnxruntime's
com.microsoft.DynamicQuantizeLSTM. README ("What the numbers mean") gives the formulas.

Per direction, sequence step and batch row, with G gates (LSTM 4, GRU 3, RNN 1), hidden size H
and input size I:

* MACs: the input and recurrent matmuls of every gate, G·H·(I + H); LSTM peepholes add 3·H;
* other FLOPs: the biases (Wb and Rb, 2·G·H, when B is given), the clip (G·H, when set), and the
  activations and gating: LSTM 9·H (3 sigmoids, 2 tanh, c = f⊙c + i⊙g, h = o⊙tanh(c)), GRU 8·H
  (2 sigmoids, tanh, r⊙h, h = (1−z)⊙h̃ + z⊙h), RNN H (the activation).
"""

from __future__ import annotations

from cnncli.costs.base import COSTS, MS_COSTS, UNKNOWN, Cost, NodeView, Slots, set_slots

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1, "DynamicQuantizeLSTM": 4}
GATING = {"LSTM": 9, "GRU": 8, "RNN": 1, "DynamicQuantizeLSTM": 9}
PEEPHOLE = {"LSTM": 7, "DynamicQuantizeLSTM": 7}  # the input slot of P


def recurrent_cost(v: NodeView, int8: bool = False) -> Cost:
    x, w = v.shape(0), v.shape(1)
    if x is None or w is None or len(x) != 3 or len(w) != 3:
        return UNKNOWN
    gates = GATES[v.op]
    a = v.attrs
    if v.op == "DynamicQuantizeLSTM":  # W: [dirs, input, 4·hidden]
        dirs, inputs = w[0], w[1]
    else:  # W: [dirs, G·hidden, input]
        dirs, inputs = w[0], w[2]
    hidden = a.get("hidden_size") or (w[2] if v.op == "DynamicQuantizeLSTM" else w[1]) // gates
    steps, batch = (x[1], x[0]) if a.get("layout", 0) else (x[0], x[1])
    rows = dirs * steps * batch
    per = gates * hidden * (inputs + hidden)
    if v.op in PEEPHOLE and v.has(PEEPHOLE[v.op]):
        per += 3 * hidden
    other = GATING[v.op] * hidden
    if v.has(3):
        other += 2 * gates * hidden
    if "clip" in a:
        other += gates * hidden
    return Cost(rows * per, rows * other, int8)


COSTS.register("LSTM", "GRU", "RNN")(recurrent_cost)
set_slots(COSTS, ("GRU", "RNN"), Slots(weight=(1, 2), extra=(3,)))
set_slots(COSTS, ("LSTM",), Slots(weight=(1, 2), extra=(3, 7)))


@MS_COSTS.register("DynamicQuantizeLSTM")
def _dynamic_quantize_lstm(v: NodeView) -> Cost:
    return recurrent_cost(v, int8=True)  # X and h are quantized to uint8 at each step


set_slots(MS_COSTS, ("DynamicQuantizeLSTM",), Slots(weight=(1, 2), extra=(3, 7), integer=True))
