"""An independent numpy deconvnet / gradient / guided-backprop for chain-style CNNs.

Written from the definitions (Zeiler & Fergus 2013 §2.1; Simonyan et al. 2013; Springenberg et al.
2014) with explicit loops, in float64, and sharing no code with cnncli (which builds an ONNX
graph of ConvTranspose, ScatterElements, ...). A network is a list of layer dicts:

    {"op": "conv", "W": [O,C,kh,kw], "B": [O], "strides": (sh,sw), "pads": (top,left,bottom,right),
     "dilations": (dh,dw)}
    {"op": "relu"}
    {"op": "maxpool", "kernel": (kh,kw), "strides": (sh,sw), "pads": (t,l,b,r), "ceil_mode": 0|1}
    {"op": "avgpool", "kernel": ..., "strides": ..., "pads": ..., "count_include_pad": 0|1}
    {"op": "lrn", "size": n, "alpha": a, "beta": b, "bias": k}
    {"op": "flatten"}
    {"op": "gemm", "W": [O,I], "B": [O]}                     # y = x·Wᵀ + B
    {"op": "pick", "source": [c...], "scale": [..], "shift": [..]}   # y_c = x[:, source_c]·scale_c + shift_c
    {"op": "chunk", "index": i}                              # channel half i of two
    {"op": "clip", "min": 0.0, "max": 6.0}                   # ReLU6
    {"op": "layernorm", "gamma": [C], "beta": [C], "eps": e} # over the channels at each position
    {"op": "gelu", "approximate": "none" | "tanh"}
(a conv may carry "group": g.)

Reverse rules (signal R from above, forward input x of the layer):

    conv     the adjoint: every tap's contribution scattered back through the same weights
    relu     backprop R·1[x>0] · deconvnet max(R,0) · guided max(R,0)·1[x>0]
    maxpool  R of each window added to its switch (the window's first maximum)
    avgpool  R/count spread over the window's real input positions
    lrn      identity in deconvnet and guided (the paper skips it); the exact Jacobianᵀ in backprop
    flatten  reshape back; gemm: R·W
    pick     R_c·scale_c added to channel source_c; chunk: R put back into its half, zeros elsewhere
    clip     with min 0 a rectifier: backprop R·1[0<x<max] · deconvnet max(R,0) · guided both
    layernorm  Rᵀ·J in every mode, J the C×C Jacobian of the normalisation at each position
    gelu     R·GELU'(x) in every mode
"""

from __future__ import annotations

import math

import numpy as np

MODES = ("deconvnet", "backprop", "guided")


# ---------------------------------------------------------------- conv


def _conv_out(n, k, s, d, pb, pe):
    return (n + pb + pe - d * (k - 1) - 1) // s + 1


def _groups(L, c_in):
    """(layer, input channel slice, output channel slice) for each group of a grouped conv."""
    g = L.get("group", 1)
    o = L["W"].shape[0] // g
    ci = c_in // g
    return [({**L, "W": L["W"][k * o:(k + 1) * o], "B": L["B"][k * o:(k + 1) * o], "group": 1},
             slice(k * ci, (k + 1) * ci), slice(k * o, (k + 1) * o)) for k in range(g)]


def conv_forward(x, L):
    if L.get("group", 1) > 1:
        return np.concatenate([conv_forward(x[:, cin], Lg) for Lg, cin, _ in _groups(L, x.shape[1])], axis=1)
    W, B = L["W"].astype(np.float64), L["B"].astype(np.float64)
    (sh, sw), (dh, dw) = L["strides"], L.get("dilations", (1, 1))
    pt, pl, pb, pr = L["pads"]
    N, C, H, Wd = x.shape
    O, _, kh, kw = W.shape
    Ho, Wo = _conv_out(H, kh, sh, dh, pt, pb), _conv_out(Wd, kw, sw, dw, pl, pr)
    xp = np.zeros((N, C, H + pt + pb, Wd + pl + pr))
    xp[:, :, pt:pt + H, pl:pl + Wd] = x
    y = np.zeros((N, O, Ho, Wo)) + B[None, :, None, None]
    for oh in range(Ho):
        for ow in range(Wo):
            for i in range(kh):
                for j in range(kw):
                    y[:, :, oh, ow] += xp[:, :, oh * sh + i * dh, ow * sw + j * dw] @ W[:, :, i, j].T
    return y


def conv_adjoint(R, L, x_shape):
    if L.get("group", 1) > 1:
        parts = _groups(L, x_shape[1])
        return np.concatenate([conv_adjoint(R[:, cout], Lg, (x_shape[0], cin.stop - cin.start, *x_shape[2:]))
                               for Lg, cin, cout in parts], axis=1)
    W = L["W"].astype(np.float64)
    (sh, sw), (dh, dw) = L["strides"], L.get("dilations", (1, 1))
    pt, pl, pb, pr = L["pads"]
    _, C, H, Wd = x_shape
    _, _, kh, kw = W.shape
    K, _, Ho, Wo = R.shape
    gp = np.zeros((K, C, H + pt + pb, Wd + pl + pr))
    for oh in range(Ho):
        for ow in range(Wo):
            for i in range(kh):
                for j in range(kw):
                    gp[:, :, oh * sh + i * dh, ow * sw + j * dw] += R[:, :, oh, ow] @ W[:, :, i, j]
    return gp[:, :, pt:pt + H, pl:pl + Wd]


# ---------------------------------------------------------------- pooling


def _pool_out(n, k, s, pb, pe, ceil_mode):
    span = n + pb + pe - k
    out = (math.ceil(span / s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + pb:  # a last window starting in the end padding is dropped
        out -= 1
    return out


def _taps(o, s, k, pb):
    return [o * s - pb + t for t in range(k)]


def maxpool_forward(x, L):
    (kh, kw), (sh, sw) = L["kernel"], L["strides"]
    pt, pl, pb, pr = L["pads"]
    N, C, H, Wd = x.shape
    Ho = _pool_out(H, kh, sh, pt, pb, L.get("ceil_mode", 0))
    Wo = _pool_out(Wd, kw, sw, pl, pr, L.get("ceil_mode", 0))
    y = np.zeros((N, C, Ho, Wo))
    switches = np.zeros((N, C, Ho, Wo, 2), dtype=int)
    for n in range(N):
        for c in range(C):
            for oh in range(Ho):
                for ow in range(Wo):
                    best, where = -np.inf, None
                    for h in _taps(oh, sh, kh, pt):
                        for w in _taps(ow, sw, kw, pl):
                            if 0 <= h < H and 0 <= w < Wd and x[n, c, h, w] > best:  # first maximum wins
                                best, where = x[n, c, h, w], (h, w)
                    y[n, c, oh, ow] = best
                    switches[n, c, oh, ow] = where
    return y, switches


def maxpool_reverse(R, switches, x_shape):
    K, C, Ho, Wo = R.shape
    g = np.zeros((K, *x_shape[1:]))
    for c in range(C):
        for oh in range(Ho):
            for ow in range(Wo):
                h, w = switches[0, c, oh, ow]
                g[:, c, h, w] += R[:, c, oh, ow]  # windows sharing a switch add up
    return g


def _avg_windows(x_shape, L):
    (kh, kw), (sh, sw) = L["kernel"], L["strides"]
    pt, pl, pb, pr = L["pads"]
    _, _, H, Wd = x_shape
    Ho, Wo = _pool_out(H, kh, sh, pt, pb, 0), _pool_out(Wd, kw, sw, pl, pr, 0)
    for oh in range(Ho):
        for ow in range(Wo):
            rows, cols = _taps(oh, sh, kh, pt), _taps(ow, sw, kw, pl)
            real = [(h, w) for h in rows for w in cols if 0 <= h < H and 0 <= w < Wd]
            if L["count_include_pad"]:
                count = sum(1 for h in rows for w in cols if -pt <= h < H + pb and -pl <= w < Wd + pr)
            else:
                count = len(real)
            yield oh, ow, real, count, (Ho, Wo)


def avgpool_forward(x, L):
    out = None
    for oh, ow, real, count, (Ho, Wo) in _avg_windows(x.shape, L):
        if out is None:
            out = np.zeros((x.shape[0], x.shape[1], Ho, Wo))
        out[:, :, oh, ow] = sum(x[:, :, h, w] for h, w in real) / count
    return out


def avgpool_reverse(R, x_shape, L):
    g = np.zeros((R.shape[0], *x_shape[1:]))
    for oh, ow, real, count, _ in _avg_windows(x_shape, L):
        for h, w in real:
            g[:, :, h, w] += R[:, :, oh, ow] / count
    return g


# ---------------------------------------------------------------- LRN


def _lrn_window(c, C, size):
    lo = max(0, c - (size - 1) // 2)
    hi = min(C - 1, c + math.ceil((size - 1) / 2))
    return range(lo, hi + 1)


def _lrn_denominator(x, L):
    C = x.shape[1]
    D = np.empty_like(x)
    for c in range(C):
        D[:, c] = L["bias"] + L["alpha"] / L["size"] * sum(x[:, j] ** 2 for j in _lrn_window(c, C, L["size"]))
    return D


def lrn_forward(x, L):
    return x / _lrn_denominator(x, L) ** L["beta"]


def lrn_gradient(R, x, L):
    """Σ_i R_i ∂y_i/∂x_j with y_i = x_i·D_i^−β, D_i = k + α/n·Σ_{j∈W(i)} x_j²."""
    a, b, n = L["alpha"], L["beta"], L["size"]
    D = _lrn_denominator(x, L)  # [1,C,H,W]
    C = x.shape[1]
    g = R * D ** (-b)
    for i in range(C):
        common = R[:, i] * x[:, i] * (-b) * D[:, i] ** (-b - 1) * (a / n) * 2.0
        for j in _lrn_window(i, C, n):
            g[:, j] += common * x[:, j]
    return g


# ---------------------------------------------------------------- channel picks, layer norm, GELU


def pick_forward(x, L):
    return np.stack([x[:, c] * s + t for c, s, t in zip(L["source"], L["scale"], L["shift"])], axis=1)


def pick_reverse(R, x_shape, L):
    g = np.zeros((R.shape[0], *x_shape[1:]))
    for out, (c, s) in enumerate(zip(L["source"], L["scale"])):
        g[:, c] += R[:, out] * s
    return g


def _half(x_shape, index):
    h = x_shape[1] // 2
    return slice(index * h, (index + 1) * h)


def layernorm_forward(x, L):
    mu = x.mean(axis=1, keepdims=True)
    sd = np.sqrt(((x - mu) ** 2).mean(axis=1, keepdims=True) + L["eps"])
    return (x - mu) / sd * L["gamma"].astype(np.float64)[None, :, None, None] + L["beta"].astype(np.float64)[None, :, None, None]


def layernorm_vjp(R, x, L):
    """Σ_i R_i ∂y_i/∂x_j, position by position, from the explicit Jacobian
    ∂y_i/∂x_j = γ_i/σ · (δ_ij − 1/C − x̂_i·x̂_j/C)."""
    C = x.shape[1]
    gamma = L["gamma"].astype(np.float64)
    g = np.zeros((R.shape[0], *x.shape[1:]))
    for h in range(x.shape[2]):
        for w in range(x.shape[3]):
            v = x[0, :, h, w]
            sd = math.sqrt(((v - v.mean()) ** 2).mean() + L["eps"])
            xh = (v - v.mean()) / sd
            J = gamma[:, None] / sd * (np.eye(C) - 1.0 / C - np.outer(xh, xh) / C)
            g[:, :, h, w] = R[:, :, h, w] @ J
    return g


_erf = np.vectorize(math.erf)
_K = math.sqrt(2 / math.pi)


def gelu_forward(x, L):
    if L["approximate"] == "tanh":
        return 0.5 * x * (1 + np.tanh(_K * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def gelu_derivative(x, L):
    if L["approximate"] == "tanh":
        t = np.tanh(_K * (x + 0.044715 * x ** 3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t ** 2) * _K * (1 + 3 * 0.044715 * x ** 2)
    return 0.5 * (1 + _erf(x / math.sqrt(2))) + x * np.exp(-x ** 2 / 2) / math.sqrt(2 * math.pi)


# ---------------------------------------------------------------- the network


def forward(layers, x):
    """Every layer's input and output (float64), and the max-pool switches."""
    t = np.asarray(x, dtype=np.float64)
    records = []
    for L in layers:
        rec = {"input": t}
        op = L["op"]
        if op == "conv":
            t = conv_forward(t, L)
        elif op == "relu":
            t = np.maximum(t, 0.0)
        elif op == "maxpool":
            t, rec["switches"] = maxpool_forward(t, L)
        elif op == "avgpool":
            t = avgpool_forward(t, L)
        elif op == "lrn":
            t = lrn_forward(t, L)
        elif op == "flatten":
            t = t.reshape(t.shape[0], -1)
        elif op == "gemm":
            t = t @ L["W"].astype(np.float64).T + L["B"].astype(np.float64)
        elif op == "pick":
            t = pick_forward(t, L)
        elif op == "chunk":
            t = t[:, _half(t.shape, L["index"])]
        elif op == "clip":
            t = np.clip(t, L["min"], L["max"])
        elif op == "layernorm":
            t = layernorm_forward(t, L)
        elif op == "gelu":
            t = gelu_forward(t, L)
        else:
            raise ValueError(op)
        rec["output"] = t
        records.append(rec)
    return records


def relu_rule(R, x, mode):
    if mode == "backprop":
        return R * (x > 0)
    if mode == "deconvnet":
        return np.maximum(R, 0.0)
    if mode == "guided":
        return np.maximum(R, 0.0) * (x > 0)
    raise ValueError(mode)


def project(layers, records, seed, mode):
    """Send ``seed`` (K rows shaped like the last layer's output) back to the input."""
    R = np.asarray(seed, dtype=np.float64)
    for L, rec in zip(reversed(layers), reversed(records)):
        x = rec["input"]
        op = L["op"]
        if op == "conv":
            R = conv_adjoint(R, L, x.shape)
        elif op == "relu":
            R = relu_rule(R, x, mode)
        elif op == "maxpool":
            R = maxpool_reverse(R, rec["switches"], x.shape)
        elif op == "avgpool":
            R = avgpool_reverse(R, x.shape, L)
        elif op == "lrn":
            R = lrn_gradient(R, x, L) if mode == "backprop" else R
        elif op == "flatten":
            R = R.reshape(R.shape[0], *x.shape[1:])
        elif op == "gemm":
            R = R @ L["W"].astype(np.float64)
        elif op == "pick":
            R = pick_reverse(R, x.shape, L)
        elif op == "chunk":
            g = np.zeros((R.shape[0], *x.shape[1:]))
            g[:, _half(x.shape, L["index"])] = R
            R = g
        elif op == "clip":
            if L["min"] != 0:
                raise ValueError("clip: only min 0 (a rectifier) is modelled")
            rectified = R if mode == "backprop" else np.maximum(R, 0.0)
            R = rectified if mode == "deconvnet" else rectified * ((x > 0) & (x < L["max"]))
        elif op == "layernorm":
            R = layernorm_vjp(R, x, L)
        elif op == "gelu":
            R = R * gelu_derivative(x, L)
        else:
            raise ValueError(op)
    return R


def seeds(act, channels, keep):
    """One row per channel: the channel's own activations (keep='map') or only its strongest one."""
    out = np.zeros((len(channels), *act.shape[1:]))
    for row, c in enumerate(channels):
        plane = act[0, c]
        if keep == "map":
            out[row, c] = plane
        else:
            idx = np.unravel_index(int(np.argmax(plane)), np.shape(plane))
            out[(row, c, *idx)] = plane[idx] if np.ndim(plane) else plane
    return out
