"""LSTM, GRU and RNN: backpropagation through time, unrolled over the (static) sequence.

The reverse graph recomputes the forward recurrence from the sequence input X (the hidden and cell
states are not outputs of the node), then runs the recurrence's adjoint backwards in time, one
step at a time in plain ONNX ops. The gates are sigmoid and tanh (the defaults; other
``activations`` are refused), not ReLU-family activations, so the three modes all take the exact
gradient. W, R, B, P, initial_h and initial_c are weights: their values are read at build time
and no signal goes to them. Supported: every ``direction``, LSTM peepholes and ``input_forget``,
GRU ``linear_before_reset`` 0 and 1; ``clip``, ``layout`` 1 (which onnxruntime does not run) and
``sequence_lens`` shorter than the sequence are refused.

The reverse rows: the first axis of X and Y is time, which the recurrence mixes, so the reverse
takes one signal shaped as the output (as ops that move values along the batch axis do) and the
projection runs one seed row at a time; a sequence of length 1 keeps the rows on that axis (Y_h
and Y_c too, with one direction).
"""

from __future__ import annotations

import numpy as np

from cnncli.reverse.builder import Builder, shape_of, unsupported
from cnncli.reverse.rules import register

_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_DEFAULT_ACTS = {"LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"], "RNN": ["tanh"]}


def _weights(b: Builder, node, n_dir: int, hidden: int, batch: int, n_in: int):
    """The weights of each direction as numpy arrays (zeros where an input is absent)."""
    op, g = node.op_type, _GATES[node.op_type]

    def val(slot, shape):
        name = node.input[slot] if slot < len(node.input) else ""
        if not name:
            return np.zeros(shape, np.float32)
        v = b.value(name)
        if v is None:
            raise unsupported(node, f"with input '{name}' that could not be computed is not supported")
        return np.asarray(v, np.float32).reshape(shape)

    w = val(1, (n_dir, g * hidden, n_in))
    r = val(2, (n_dir, g * hidden, hidden))
    bias = val(3, (n_dir, 2 * g * hidden))
    h0 = val(5, (n_dir, batch, hidden))
    c0 = val(6, (n_dir, batch, hidden)) if op == "LSTM" else None
    p = val(7, (n_dir, 3 * hidden)) if op == "LSTM" else None
    return w, r, bias, h0, c0, p


def _check(b: Builder, node, a, seq: int, batch: int):
    op = node.op_type
    if "clip" in a:
        raise unsupported(node, "with clip is not supported")
    acts = [s.decode() if isinstance(s, bytes) else str(s) for s in a.get("activations", [])]
    if acts:
        per = len(_DEFAULT_ACTS[op])
        wanted = _DEFAULT_ACTS[op] * (len(acts) // per)
        if [s.lower() for s in acts] != wanted:
            raise unsupported(node, f"with activations {acts} is not supported (only the defaults)")
    if len(node.input) > 4 and node.input[4]:
        lens = b.value(node.input[4])
        if lens is None or np.any(np.asarray(lens).reshape(-1) != seq):
            raise unsupported(node, "with sequence_lens other than the whole sequence is not supported")


class _Cell:
    """One direction's forward step and its adjoint, on tensors shaped [rows, batch, features]."""

    def __init__(self, b: Builder, op: str, w, r, bias, p, hidden: int, a):
        self.b, self.op, self.h = b, op, hidden
        g = _GATES[op]
        self.wT, self.rT = b.const(w.T, "rnn_WT"), b.const(r.T, "rnn_RT")
        self.w, self.r = b.const(w, "rnn_W"), b.const(r, "rnn_R")
        self.wb, self.rb = bias[: g * hidden], bias[g * hidden:]
        self.p = p
        self.input_forget = int(a.get("input_forget", 0))
        self.lbr = int(a.get("linear_before_reset", 0))
        self.r_np = r

    def _gate(self, t: str, k: int) -> str:
        b, h = self.b, self.h
        return b.op("Slice", [t, b.ints([k * h]), b.ints([(k + 1) * h]), b.ints([2])], "gate")

    def forward(self, x: str, state: tuple) -> tuple[tuple, dict]:
        """The next state and what the adjoint needs."""
        b, h = self.b, self.h
        xw = b.op("MatMul", [x, self.wT], "rnn_xw")
        hprev = state[0]
        if self.op == "LSTM":
            cprev = state[1]
            pre = b.op("Add", [b.op("Add", [xw, b.op("MatMul", [hprev, self.rT], "rnn_hr")]),
                               b.const(self.wb + self.rb, "rnn_b")], "rnn_pre")
            pi, po, pf = (b.const(self.p[k * h:(k + 1) * h], "peep") for k in range(3))
            i = b.op("Sigmoid", [b.op("Add", [self._gate(pre, 0), b.op("Mul", [pi, cprev])])], "lstm_i")
            if self.input_forget:
                f = b.op("Sub", [b.const(1.0), i], "lstm_f")
            else:
                f = b.op("Sigmoid", [b.op("Add", [self._gate(pre, 2), b.op("Mul", [pf, cprev])])], "lstm_f")
            cc = b.op("Tanh", [self._gate(pre, 3)], "lstm_cc")
            c = b.op("Add", [b.op("Mul", [f, cprev]), b.op("Mul", [i, cc])], "lstm_c")
            o = b.op("Sigmoid", [b.op("Add", [self._gate(pre, 1), b.op("Mul", [po, c])])], "lstm_o")
            tc = b.op("Tanh", [c], "lstm_tc")
            hn = b.op("Mul", [o, tc], "lstm_h")
            return (hn, c), dict(i=i, f=f, cc=cc, o=o, tc=tc, cprev=cprev, pi=pi, po=po, pf=pf)
        if self.op == "GRU":
            xw = b.op("Add", [xw, b.const(self.wb, "gru_wb")])
            rz = b.op("Add", [b.op("MatMul", [hprev, b.const(self.r_np[: 2 * h].T, "gru_Rzr")]),
                              b.const(self.rb[: 2 * h], "gru_rb")])
            z = b.op("Sigmoid", [b.op("Add", [self._gate(xw, 0), self._gate(rz, 0)])], "gru_z")
            rr = b.op("Sigmoid", [b.op("Add", [self._gate(xw, 1), self._gate(rz, 1)])], "gru_r")
            rhT = b.const(self.r_np[2 * h:].T, "gru_RhT")
            rbh = b.const(self.rb[2 * h:], "gru_rbh")
            if self.lbr:
                hr = b.op("Add", [b.op("MatMul", [hprev, rhT]), rbh], "gru_hr")
                hh = b.op("Tanh", [b.op("Add", [self._gate(xw, 2), b.op("Mul", [rr, hr])])], "gru_hh")
            else:
                hr = None
                rh = b.op("Mul", [rr, hprev])
                hh = b.op("Tanh", [b.op("Add", [self._gate(xw, 2), b.op("Add", [b.op("MatMul", [rh, rhT]), rbh])])],
                          "gru_hh")
            one_z = b.op("Sub", [b.const(1.0), z])
            hn = b.op("Add", [b.op("Mul", [one_z, hh]), b.op("Mul", [z, hprev])], "gru_h")
            return (hn,), dict(z=z, r=rr, hh=hh, hr=hr, hprev=hprev, one_z=one_z)
        pre = b.op("Add", [b.op("Add", [xw, b.op("MatMul", [hprev, self.rT])]), b.const(self.wb + self.rb, "rnn_b")])
        hn = b.op("Tanh", [pre], "rnn_h")
        return (hn,), dict(hn=hn)

    def _dsig(self, s: str) -> str:  # σ' = σ(1 − σ)
        b = self.b
        return b.op("Mul", [s, b.op("Sub", [b.const(1.0), s])], "dsig")

    def _dtanh(self, t: str) -> str:  # tanh' = 1 − tanh²
        b = self.b
        return b.op("Sub", [b.const(1.0), b.op("Mul", [t, t])], "dtanh")

    def backward(self, dh: str, dc: str | None, m: dict) -> tuple[str, str, str | None]:
        """Given the signal at this step's h (and c), the signals at x, h_prev (and c_prev)."""
        b = self.b
        mul = lambda *xs: b.op("Mul", list(xs))  # noqa: E731
        add = lambda *xs: b.op("Add", list(xs))  # noqa: E731
        if self.op == "LSTM":
            dao = mul(mul(dh, m["tc"]), self._dsig(m["o"]))
            dct = add(mul(mul(dh, m["o"]), self._dtanh(m["tc"])), mul(dao, m["po"]))
            if dc is not None:
                dct = add(dct, dc)
            di = mul(dct, m["cc"])
            df = mul(dct, m["cprev"])
            dac = mul(mul(dct, m["i"]), self._dtanh(m["cc"]))
            if self.input_forget:
                dai = mul(b.op("Sub", [di, df]), self._dsig(m["i"]))
                daf = b.op("Mul", [dai, b.const(0.0)])
            else:
                dai = mul(di, self._dsig(m["i"]))
                daf = mul(df, self._dsig(m["f"]))
            dcprev = add(add(mul(dct, m["f"]), mul(dai, m["pi"])), mul(daf, m["pf"]))
            da = b.op("Concat", [dai, dao, daf, dac], "lstm_da", axis=2)
            return b.op("MatMul", [da, self.w], "rnn_dx"), b.op("MatMul", [da, self.r], "rnn_dh"), dcprev
        if self.op == "GRU":
            h = self.h
            dhh = mul(mul(dh, m["one_z"]), self._dtanh(m["hh"]))
            daz = mul(mul(dh, b.op("Sub", [m["hprev"], m["hh"]])), self._dsig(m["z"]))
            dhprev = mul(dh, m["z"])
            rh = b.const(self.r_np[2 * h:], "gru_Rh")
            if self.lbr:
                dr = mul(dhh, m["hr"])
                dhprev = add(dhprev, b.op("MatMul", [mul(dhh, m["r"]), rh]))
            else:
                drh = b.op("MatMul", [dhh, rh])
                dr = mul(drh, m["hprev"])
                dhprev = add(dhprev, mul(drh, m["r"]))
            dar = mul(dr, self._dsig(m["r"]))
            dzr = b.op("Concat", [daz, dar], "gru_dzr", axis=2)
            dhprev = add(dhprev, b.op("MatMul", [dzr, b.const(self.r_np[: 2 * h], "gru_Rzr")]))
            da = b.op("Concat", [dzr, dhh], "gru_da", axis=2)
            return b.op("MatMul", [da, self.w], "rnn_dx"), dhprev, None
        da = mul(dh, self._dtanh(m["hn"]))
        return b.op("MatMul", [da, self.w], "rnn_dx"), b.op("MatMul", [da, self.r], "rnn_dh"), None


@register("LSTM", "GRU", "RNN", values=(1, 2, 3, 4, 5, 6, 7))
def _recurrent(b: Builder, node, a, grads) -> dict:
    op, x = node.op_type, node.input[0]
    if int(a.get("layout", 0)) != 0:
        raise unsupported(node, "with layout 1 is not supported (onnxruntime does not run it)")
    seq, batch, n_in = shape_of(b, x)
    _check(b, node, a, seq, batch)
    hidden = int(a.get("hidden_size", 0)) or None
    direction = a.get("direction", "forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    n_dir = 2 if direction == "bidirectional" else 1
    if hidden is None:
        hidden = shape_of(b, node.input[2])[-1]
    w, r, bias, h0, c0, p = _weights(b, node, n_dir, hidden, batch, n_in)
    rows_free = seq == 1
    b.one_row = b.one_row or not rows_free or (n_dir == 2 and any(g is not None for g in grads[1:]))
    # the forward sequence as T tensors [1, batch, in]
    xf = b.fwd(x)
    steps = [b.op("Slice", [xf, b.ints([t]), b.ints([t + 1]), b.ints([0])], "x_t") for t in range(seq)]
    # the signals as [rows, T, D, batch, H] (Y) and [rows, D, batch, H] (Y_h, Y_c), rows 1 unless free
    sig = [_signal(b, g, k, rows_free, seq, n_dir, batch, hidden) for k, g in enumerate((list(grads) + [None] * 3)[:3])]
    dx = [[] for _ in range(seq)]
    for d in range(n_dir):
        cell = _Cell(b, op, w[d], r[d], bias[d], p[d] if p is not None else None, hidden, a)
        order = list(range(seq)) if (direction == "forward" or (direction == "bidirectional" and d == 0)) \
            else list(range(seq - 1, -1, -1))
        state = (b.const(h0[d][None], "h0"),) + ((b.const(c0[d][None], "c0"),) if op == "LSTM" else ())
        memo = []
        for t in order:
            state, m = cell.forward(steps[t], state)
            memo.append((t, m))
        dh = _at(b, sig[1], d, 1)
        dc = _at(b, sig[2], d, 1) if op == "LSTM" else None
        for t, m in reversed(memo):
            dy = _at(b, _at(b, sig[0], t, 1), d, 1)
            dh = dy if dh is None else (dh if dy is None else b.op("Add", [dh, dy]))
            if dh is None and dc is None:  # no signal yet (only earlier outputs of Y carry one)
                continue
            if dh is None:
                dh = b.op("Mul", [dc, b.const(0.0)], "no_signal")
            gx, dh, dc = cell.backward(dh, dc, m)
            dx[t].append(gx)
    some = next(gx for gxs in dx for gx in gxs)
    parts = []
    for t in range(seq):
        gx = dx[t] or [b.op("Mul", [some, b.const(0.0)], "no_signal")]  # a step after the last signal
        gx = gx[0] if len(gx) == 1 else b.op("Sum", gx, "fanin")
        parts.append(b.op("Unsqueeze", [gx, b.ints([1])], "step"))
    g = b.op("Concat", parts, "rnn_dX", axis=1)  # [rows, T, batch, in]
    return {x: b.op("Reshape", [g, b.ints([-1 if rows_free else seq, batch, n_in])], "rnn_dX")}


def _signal(b: Builder, g, slot: int, rows_free: bool, seq: int, n_dir: int, batch: int, hidden: int):
    """The signal at output ``slot`` with a leading rows axis: Y as [rows, T, D, batch, H], Y_h
    and Y_c as [rows, D, batch, H]; rows is 1 (one signal) unless the sequence has length 1."""
    if g is None:
        return None
    if slot == 0:
        return b.op("Reshape", [g, b.ints([-1 if rows_free else 1, seq, n_dir, batch, hidden])], "sig_Y")
    if n_dir == 1 and rows_free:  # [D=1, batch, H]: its first axis holds the rows
        return b.op("Reshape", [g, b.ints([-1, 1, batch, hidden])], "sig_Yh")
    return b.op("Reshape", [g, b.ints([1, n_dir, batch, hidden])], "sig_Yh")


def _at(b: Builder, t, index: int, axis: int):
    """Take position ``index`` of ``axis`` (dropped), or None for no signal."""
    if t is None:
        return None
    return b.op("Squeeze", [b.op("Slice", [t, b.ints([index]), b.ints([index + 1]), b.ints([axis])]), b.ints([axis])], "at")
