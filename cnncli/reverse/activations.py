"""Activations: the ReLU family (where the three modes differ) and the smooth ones (exact)."""

from __future__ import annotations

import numpy as np

from cnncli.reverse.builder import Builder, unsupported
from cnncli.reverse.rules import register

RELU_FAMILY = frozenset({"Relu", "LeakyRelu", "PRelu", "Clip"})


@register("Clip", values=(1, 2))
@register("Relu", "LeakyRelu", "PRelu")
def relu_family(b: Builder, node, a, grads) -> dict:
    """f(R) in deconvnet, R·f'(x) in backprop, f(R)·f'(x) in guided."""
    x, R, op = node.input[0], grads[0], node.op_type
    if op == "Clip":
        lo, hi = _clip_bounds(b, node, a)
        if lo != 0.0:
            return _clip_exact(b, node, grads, lo, hi)
    rectified = None
    if b.mode in ("deconvnet", "guided"):
        if op == "Relu" or op == "Clip":
            rectified = b.op("Relu", [R], "rectify")
        elif op == "LeakyRelu":
            rectified = b.op("LeakyRelu", [R], "rectify", alpha=float(a.get("alpha", 0.01)))
        else:  # PRelu
            rectified = b.op("PRelu", [R, b.fwd(node.input[1])], "rectify")
        if b.mode == "deconvnet":
            return {x: rectified}
    xf = b.fwd(x)
    zero = b.const(0.0, "zero")
    if op in ("Relu", "Clip"):
        mask = b.float_mask(b.op("Greater", [xf, zero], "pos"))
        if op == "Clip" and hi is not None:
            mask = b.op("Mul", [mask, b.float_mask(b.op("Less", [xf, b.const(hi, "hi")], "below"))], "mask")
    else:
        slope = b.const(float(a.get("alpha", 0.01))) if op == "LeakyRelu" else b.fwd(node.input[1])
        pos = b.op("Greater", [xf, zero], "pos")
        mask = b.op("Where", [pos, b.const(1.0, "one"), slope], "slope")
    base = rectified if b.mode == "guided" else R
    return {x: b.op("Mul", [base, mask], "gate")}


def _clip_bounds(b: Builder, node, a) -> tuple[float, float | None]:
    if "min" in a or "max" in a:
        return float(a.get("min", -np.inf)), (float(a["max"]) if "max" in a else None)
    values = []
    for slot in (1, 2):
        name = node.input[slot] if len(node.input) > slot else ""
        if not name:
            values.append(None)
            continue
        v = b.value(name)
        if v is None:
            raise unsupported(node, "has bounds that could not be computed; not supported")
        values.append(float(np.asarray(v).reshape(-1)[0]))
    lo = -np.inf if values[0] is None else values[0]
    return lo, values[1]


def _clip_exact(b: Builder, node, grads, lo: float, hi: float | None) -> dict:
    """The exact gate of a Clip whose lower bound is not 0 (not a rectifier), in every mode."""
    xf = b.fwd(node.input[0])
    mask = b.float_mask(b.op("Greater", [xf, b.const(lo)], "above"))
    if hi is not None:
        mask = b.op("Mul", [mask, b.float_mask(b.op("Less", [xf, b.const(hi)], "below"))], "mask")
    return {node.input[0]: b.op("Mul", [grads[0], mask], "gate")}


@register("Sigmoid")
def _sigmoid(b: Builder, node, a, grads) -> dict:
    y = b.fwd(node.output[0])
    d = b.op("Mul", [y, b.op("Sub", [b.const(1.0), y])], "dsig")
    return {node.input[0]: b.op("Mul", [grads[0], d], "gate")}


@register("Tanh")
def _tanh(b: Builder, node, a, grads) -> dict:
    y = b.fwd(node.output[0])
    d = b.op("Sub", [b.const(1.0), b.op("Mul", [y, y])], "dtanh")
    return {node.input[0]: b.op("Mul", [grads[0], d], "gate")}


@register("HardSigmoid")
def _hard_sigmoid(b: Builder, node, a, grads) -> dict:
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    t = b.op("Add", [b.op("Mul", [b.fwd(node.input[0]), b.const(alpha)]), b.const(beta)], "hs")
    inside = b.op("Mul", [
        b.float_mask(b.op("Greater", [t, b.const(0.0)])), b.float_mask(b.op("Less", [t, b.const(1.0)]))
    ], "inside")
    return {node.input[0]: b.op("Mul", [grads[0], b.op("Mul", [inside, b.const(alpha)])], "gate")}


@register("HardSwish")
def _hard_swish(b: Builder, node, a, grads) -> dict:
    # y = x·clip(x/6 + 1/2, 0, 1): y' = 0 below −3, 1 above 3, (2x + 3)/6 between
    x = b.fwd(node.input[0])
    mid = b.op("Add", [b.op("Mul", [x, b.const(1 / 3)]), b.const(0.5)], "mid")
    above = b.op("Greater", [x, b.const(3.0)])
    below = b.op("Less", [x, b.const(-3.0)])
    d = b.op("Where", [above, b.const(1.0), b.op("Where", [below, b.const(0.0), mid])], "dhswish")
    return {node.input[0]: b.op("Mul", [grads[0], d], "gate")}


@register("Erf")
def _erf(b: Builder, node, a, grads) -> dict:
    # erf'(x) = 2/√π · exp(−x²)
    x = b.fwd(node.input[0])
    d = b.op("Mul", [b.op("Exp", [b.op("Neg", [b.op("Mul", [x, x])])]), b.const(2 / np.sqrt(np.pi))], "derf")
    return {node.input[0]: b.op("Mul", [grads[0], d], "gate")}


@register("Gelu")
def _gelu(b: Builder, node, a, grads) -> dict:
    """Gelu (opset 20), written with opset-17 ops. approximate='none': y = x·Φ(x), y' = Φ(x) + x·φ(x);
    'tanh': y = ½x(1 + tanh u), u = √(2/π)(x + 0.044715x³), y' = ½(1 + t) + ½x(1 − t²)·u'."""
    x = b.fwd(node.input[0])
    approx = a.get("approximate", "none")
    if approx == "none":
        cdf = b.op("Mul", [b.op("Add", [b.op("Erf", [b.op("Mul", [x, b.const(1 / np.sqrt(2))])]), b.const(1.0)]), b.const(0.5)], "cdf")
        pdf = b.op("Mul", [b.op("Exp", [b.op("Mul", [b.op("Mul", [x, x]), b.const(-0.5)])]), b.const(1 / np.sqrt(2 * np.pi))], "pdf")
        d = b.op("Add", [cdf, b.op("Mul", [x, pdf])], "dgelu")
    elif approx == "tanh":
        k, c = np.sqrt(2 / np.pi), 0.044715
        x2 = b.op("Mul", [x, x])
        u = b.op("Mul", [b.op("Add", [x, b.op("Mul", [b.op("Mul", [x2, x]), b.const(c)])]), b.const(k)], "u")
        t = b.op("Tanh", [u])
        du = b.op("Mul", [b.op("Add", [b.op("Mul", [x2, b.const(3 * c)]), b.const(1.0)]), b.const(k)], "du")
        sech2 = b.op("Sub", [b.const(1.0), b.op("Mul", [t, t])], "sech2")
        d = b.op("Add", [
            b.op("Mul", [b.op("Add", [t, b.const(1.0)]), b.const(0.5)]),
            b.op("Mul", [b.op("Mul", [b.op("Mul", [x, sech2]), du]), b.const(0.5)]),
        ], "dgelu")
    else:
        raise unsupported(node, f"with approximate='{approx}' is not supported")
    return {node.input[0]: b.op("Mul", [grads[0], d], "gate")}
