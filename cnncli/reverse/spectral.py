"""DFT and STFT: linear in the signal, so the reverse is the transposed transform.

The matrix is the op's own: onnx's reference evaluator runs the node (its inverse, onesided and
dft_length; STFT's window) on the unit signals, so every variant (real or complex input, a
one-sided or inverse transform, a padded or cut length) gets exactly the map it computes.

    DFT   y[..k..,r] = Σ M[n,c,k,r] x[..n..,c]       dx = Σ_{k,r} M[n,c,k,r] R[..k..,r]   (Einsum)
    STFT  each frame f is the DFT of x[f·step + t]·window[t]: the frames' signals transposed
          (Einsum) and added back where each frame was taken from (overlap-add)

Onnx's schemas mark these inputs non-differentiable, but the maps are linear: the same in every
mode (no rectification). The transform along cnncli's batch axis (axis 0), and a window or frame
sizes computed from the input, are refused.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from cnncli.reverse.builder import Builder, carries_signal, shape_of, unsupported
from cnncli.reverse.gather import add_back
from cnncli.reverse.rules import register

_LETTERS = "abdefghijlmopqsuvwxyz"  # (k, r, n, c, t name the transform's own axes)


def _run(op: str, inputs: list, opset: int, **attrs) -> np.ndarray:
    """One node of ``op`` on ``inputs`` (arrays, or None for an absent input) by onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    names = [f"in{i}" if v is not None else "" for i, v in enumerate(inputs)]
    node = helper.make_node(op, names, ["out"], **attrs)
    inits = [onnx.numpy_helper.from_array(np.asarray(v), n) for n, v in zip(names, inputs) if v is not None]
    graph = helper.make_graph([node], "probe", [], [helper.make_tensor_value_info("out", TensorProto.UNDEFINED, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return np.asarray(ReferenceEvaluator(model).run(None, {})[0], dtype=np.float64)


def _value(b: Builder, node, slot: int, what: str):
    if slot >= len(node.input) or not node.input[slot]:
        return None
    v = b.value(node.input[slot])
    if v is None:
        raise unsupported(node, f"with a {what} computed from the input's values is not supported")
    return v


def _opset(b: Builder) -> int:
    return next((o.version for o in b.graph.model.opset_import if o.domain in ("", "ai.onnx")), 17)


@register("DFT", values=(1, 2))
def _dft(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    xs = shape_of(b, x)
    rank = len(xs)
    axis = _value(b, node, 2, "axis") if _opset(b) >= 20 else None
    axis = int(np.asarray(axis).reshape(-1)[0]) if axis is not None else int(a.get("axis", 1 if _opset(b) < 20 else -2))
    axis %= rank
    if axis == 0 or axis == rank - 1:
        raise unsupported(node, "along the batch axis is not supported" if axis == 0 else "along its complex axis is not valid")
    n, c = xs[axis], xs[-1]
    length = _value(b, node, 1, "dft_length")
    probe = np.eye(n * c, dtype=np.float32).reshape(n * c, n, c)
    m = _run("DFT", [probe, None if length is None else np.asarray(length, np.int64).reshape(()), np.asarray(1, np.int64)],
             20, inverse=int(a.get("inverse", 0)), onesided=int(a.get("onesided", 0)))  # [n·c, K, 2]
    m = m.reshape(n, c, *m.shape[1:])  # (an inverse one-sided transform is real: r of size 1)
    outer = list(_LETTERS[:rank])
    g_term, x_term = outer.copy(), outer.copy()
    g_term[axis], g_term[-1] = "k", "r"
    x_term[axis], x_term[-1] = "n", "c"
    eq = f"{''.join(g_term)},nckr->{''.join(x_term)}"
    return {x: b.op("Einsum", [grads[0], b.const(m.astype(np.float32), "dft_matrix")], "dft_T", equation=eq)}


@register("STFT", values=(1, 2, 3))
def _stft(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    if len(node.input) > 2 and carries_signal(b, node.input[2]):
        raise unsupported(node, "with a window computed from the input is not supported")
    xs = shape_of(b, x)  # [batch, length, 1 or 2]
    step = int(np.asarray(_value(b, node, 1, "frame_step")).reshape(-1)[0])
    window = _value(b, node, 2, "window")
    frame = _value(b, node, 3, "frame_length")
    t = int(np.asarray(frame).reshape(-1)[0]) if frame is not None else int(np.asarray(window).size)
    length, c = xs[1], xs[2]
    frames = 1 + (length - t) // step
    # one frame of each unit signal: the window times the DFT, W[t, c, k, r]
    probe = np.eye(t * c, dtype=np.float32).reshape(t * c, t, c)
    w = _run("STFT", [probe, np.asarray(t, np.int64), None if window is None else np.asarray(window, np.float32),
                      np.asarray(t, np.int64)], 17, onesided=int(a.get("onesided", 1)))  # [t·c, 1, K, 2]
    w = w.reshape(t, c, w.shape[2], 2)
    h = b.op("Einsum", [grads[0], b.const(w.astype(np.float32), "stft_matrix")], "stft_T", equation="afkr,tckr->aftc")
    # frame f, offset t came from x[f·step + t]: 1-based places in [1, length, c]
    src = (np.arange(frames)[:, None, None] * step + np.arange(t)[None, :, None]) * c + np.arange(c)[None, None, :] + 1
    return {x: add_back(b, h, src.reshape(1, frames, t, c), [1, length, c])}
