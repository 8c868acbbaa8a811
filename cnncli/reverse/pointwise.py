"""Unary elementwise ops, Pow, Mod and CastLike: the exact gradient R·f'(x) in every mode.

None of them rectifies in deconvnet or guided mode (only the ReLU family does, activations.py).
Each derivative is written with opset-17 ops from the forward input x and, where cheaper, the
forward output y. At a kink (Abs at 0, Shrink and ThresholdedRelu at their thresholds) the
derivative of the side x is not on is taken, as torch does (Abs'(0) = 0).
"""

from __future__ import annotations

from onnx import TensorProto

from cnncli.frontend.graph import FLOAT_TYPES
from cnncli.reverse.builder import Builder, carries_signal, shape_of, unsupported
from cnncli.reverse.rules import register

SELU_ALPHA, SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875


def _inv_sqrt(b: Builder, t: str) -> str:
    return b.op("Reciprocal", [b.op("Sqrt", [t])])


def _sq(b: Builder, t: str) -> str:
    return b.op("Mul", [t, t], "sq")


def _above(b: Builder, x: str, threshold: float) -> str:
    return b.op("Greater", [x, b.const(threshold)], "above")


# f'(x) from (builder, x, y, attributes); x and y are forward tensors
DERIVATIVES = {
    "Abs": lambda b, x, y, a: b.op("Sign", [x]),
    "Acos": lambda b, x, y, a: b.op("Neg", [_inv_sqrt(b, b.op("Sub", [b.const(1.0), _sq(b, x)]))]),
    "Asin": lambda b, x, y, a: _inv_sqrt(b, b.op("Sub", [b.const(1.0), _sq(b, x)])),
    "Atan": lambda b, x, y, a: b.op("Reciprocal", [b.op("Add", [b.const(1.0), _sq(b, x)])]),
    "Acosh": lambda b, x, y, a: _inv_sqrt(b, b.op("Sub", [_sq(b, x), b.const(1.0)])),
    "Asinh": lambda b, x, y, a: _inv_sqrt(b, b.op("Add", [_sq(b, x), b.const(1.0)])),
    "Atanh": lambda b, x, y, a: b.op("Reciprocal", [b.op("Sub", [b.const(1.0), _sq(b, x)])]),
    "Cos": lambda b, x, y, a: b.op("Neg", [b.op("Sin", [x])]),
    "Sin": lambda b, x, y, a: b.op("Cos", [x]),
    "Tan": lambda b, x, y, a: b.op("Add", [b.const(1.0), _sq(b, y)]),
    "Cosh": lambda b, x, y, a: b.op("Sinh", [x]),
    "Sinh": lambda b, x, y, a: b.op("Cosh", [x]),
    "Exp": lambda b, x, y, a: y,
    "Log": lambda b, x, y, a: b.op("Reciprocal", [x]),
    "Reciprocal": lambda b, x, y, a: b.op("Neg", [_sq(b, y)]),
    "Sqrt": lambda b, x, y, a: b.op("Div", [b.const(0.5), y]),
    "Softplus": lambda b, x, y, a: b.op("Sigmoid", [x]),
    "Softsign": lambda b, x, y, a: b.op("Reciprocal", [_sq(b, b.op("Add", [b.const(1.0), b.op("Abs", [x])]))]),
    "Elu": lambda b, x, y, a: _exp_below(b, x, 1.0, float(a.get("alpha", 1.0)), 1.0),
    "Selu": lambda b, x, y, a: _exp_below(b, x, float(a.get("gamma", SELU_GAMMA)),
                                          float(a.get("gamma", SELU_GAMMA)) * float(a.get("alpha", SELU_ALPHA)), 1.0),
    "Celu": lambda b, x, y, a: _exp_below(b, x, 1.0, 1.0, 1.0 / float(a.get("alpha", 1.0))),
    "Mish": lambda b, x, y, a: _mish(b, x),
    "Shrink": lambda b, x, y, a: b.float_mask(b.op("Greater", [b.op("Abs", [x]), b.const(float(a.get("lambd", 0.5)))])),
    "ThresholdedRelu": lambda b, x, y, a: b.float_mask(_above(b, x, float(a.get("alpha", 1.0)))),
    "Swish": lambda b, x, y, a: _swish(b, x, float(a.get("alpha", 1.0))),
}


def _exp_below(b: Builder, x: str, slope: float, scale: float, k: float) -> str:
    """``slope`` for x > 0, ``scale``·exp(k·x) below (Elu, Selu, Celu)."""
    below = b.op("Mul", [b.op("Exp", [b.op("Mul", [x, b.const(k)])]), b.const(scale)], "dexp")
    return b.op("Where", [_above(b, x, 0.0), b.const(slope), below], "dexp_below")


def _swish(b: Builder, x: str, alpha: float) -> str:
    # y = x·σ(αx): y' = σ + αx·σ·(1 − σ)
    s = b.op("Sigmoid", [b.op("Mul", [x, b.const(alpha)])])
    ds = b.op("Mul", [b.op("Mul", [x, b.const(alpha)]), b.op("Mul", [s, b.op("Sub", [b.const(1.0), s])])])
    return b.op("Add", [s, ds], "dswish")


def _mish(b: Builder, x: str) -> str:
    # y = x·tanh(softplus x): y' = tanh(sp) + x·σ(x)·(1 − tanh²(sp))
    t = b.op("Tanh", [b.op("Softplus", [x])])
    sech2 = b.op("Sub", [b.const(1.0), _sq(b, t)])
    return b.op("Add", [t, b.op("Mul", [b.op("Mul", [x, b.op("Sigmoid", [x])]), sech2])], "dmish")


@register(*DERIVATIVES)
def _unary(b: Builder, node, a, grads) -> dict:
    x, y = node.input[0], node.output[0]
    d = DERIVATIVES[node.op_type](b, b.fwd(x), b.fwd(y) if node.op_type in _READS_Y else None, a)
    return {x: b.op("Mul", [grads[0], d], "gate")}


_READS_Y = frozenset({"Tan", "Exp", "Reciprocal", "Sqrt"})


@register("Neg")
def _neg(b: Builder, node, a, grads) -> dict:
    return {node.input[0]: b.op("Neg", [grads[0]], "neg")}


@register("CastLike")
def _cast_like(b: Builder, node, a, grads) -> dict:
    """Float to float (the reverse runs in float32 whatever the model's float types): the identity."""
    if b.graph.types.get(node.input[0], TensorProto.FLOAT) not in FLOAT_TYPES:
        raise unsupported(node, "from a non-float tensor is not supported")
    return {node.input[0]: grads[0]}


def as_float(b: Builder, name: str) -> str:
    """A forward tensor as float32 (an integer exponent of Pow)."""
    t = b.fwd(name)
    return t if b.graph.types.get(name, TensorProto.FLOAT) == TensorProto.FLOAT else b.op("Cast", [t], "f", to=TensorProto.FLOAT)


def accumulate(out: dict, name: str, g: str, b: Builder) -> None:
    out[name] = b.op("Add", [out[name], g], "acc") if name in out else g


@register("Pow")
def _pow(b: Builder, node, a, grads) -> dict:
    """d/dX = Y·X^(Y−1) (0 where Y = 0, as torch); d/dY = y·ln X where X > 0, 0 elsewhere (the real
    power of a negative base is not differentiable in Y)."""
    X, Y = node.input
    R, ys, out = grads[0], shape_of(b, node.output[0]), {}
    xf, yf = b.fwd(X), as_float(b, Y)
    if carries_signal(b, X):
        d = b.op("Mul", [yf, b.op("Pow", [xf, b.op("Sub", [yf, b.const(1.0)])])], "dpow")
        d = b.op("Where", [b.op("Equal", [yf, b.const(0.0)]), b.const(0.0), d], "dpow")
        accumulate(out, X, b.reduce_to(b.op("Mul", [R, d], "dpow_x"), ys, shape_of(b, X)), b)
    if carries_signal(b, Y):
        pos = b.op("Greater", [xf, b.const(0.0)], "pos")
        ln = b.op("Log", [b.op("Where", [pos, xf, b.const(1.0)])], "ln")
        d = b.op("Mul", [b.fwd(node.output[0]), ln], "dpow_exp")
        accumulate(out, Y, b.reduce_to(b.op("Mul", [R, d], "dpow_y"), ys, shape_of(b, Y)), b)
    return out


@register("Mod")
def _mod(b: Builder, node, a, grads) -> dict:
    """Float Mod (fmod=1): y = A − trunc(A/B)·B, so dA = 1 and dB = −trunc(A/B) = (y − A)/B.
    Integer Mod carries no float signal."""
    A, B = node.input
    R, ys, out = grads[0], shape_of(b, node.output[0]), {}
    if carries_signal(b, A):
        accumulate(out, A, b.reduce_to(R, ys, shape_of(b, A)), b)
    if carries_signal(b, B):
        q = b.op("Div", [b.op("Sub", [b.fwd(node.output[0]), b.fwd(A)]), b.fwd(B)], "dmod")
        accumulate(out, B, b.reduce_to(b.op("Mul", [R, q], "dmod_b"), ys, shape_of(b, B)), b)
    return out

