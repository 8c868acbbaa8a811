"""The rule table: one small function per op type, registered in :data:`RULES` (a
:class:`cnncli.registry.Registry`) with :func:`register`.

A rule gets the builder, the forward node, its attributes and the signals arriving at its outputs
(None where no signal arrives), and returns {forward input name: signal for it}. A rule that
reads the value of some of its inputs at build time (starts, pads, axes, bounds, indices) names
their slots in ``values``: the builder finds those values before any rule runs (one forward run
for all that the model does not store).
"""

from __future__ import annotations

from typing import Callable

import onnx

from cnncli.registry import Registry

Rule = Callable[..., dict]
RULES = Registry("reverse rule")

# Ops with a cost rule and no reverse rule, in two honest lists; tests/test_op_registries.py
# fails when an op has one kind of rule and is in neither the other table nor these lists.
# NO_SIGNAL: no float signal goes back through them (comparisons, logic, integer or index
# outputs, shape bookkeeping, piecewise-constant functions) or their reverse depends on data
# (control flow).
NO_SIGNAL = frozenset((
    "And Or Xor Not Equal Greater Less GreaterOrEqual LessOrEqual BitShift IsNaN IsInf ArgMax ArgMin "
    "Shape Size Range NonZero OneHot EyeLike Constant ConstantOfShape Ceil Floor Round Sign Hardmax If Loop Scan"
).split())
# NOT_YET: differentiable, and `cnn project` refuses a path through them until they get a rule.
NOT_YET = frozenset((
    ""
).split())
# the ops that got a cost rule for issue 16 (costs/standard.py, recurrent.py, quantized.py) and
# have no reverse rule: random generators, integer and bitwise arithmetic, quantized integer
# layers, windows and detection post-processing carry no signal; the rest waits for a rule
NO_SIGNAL = NO_SIGNAL | frozenset((
    "Bernoulli BitCast BitwiseAnd BitwiseNot BitwiseOr BitwiseXor BlackmanWindow HammingWindow HannWindow "
    "MelWeightMatrix QLinearConv QLinearMatMul Multinomial "
    "NonMaxSuppression RandomNormal RandomNormalLike RandomUniform RandomUniformLike"
).split())
NOT_YET = NOT_YET | frozenset((
    ""
).split())

# Elementwise ops (no axis attribute): on a tensor without the batch axis ([C, H, W], its rows
# stacked [K·C, H, W] in the signal) the builder runs their rules with a leading axis of one added
ELEMENTWISE = frozenset((
    "Clip Relu LeakyRelu PRelu Sigmoid Tanh HardSigmoid HardSwish Erf Gelu Add Sub Sum Mul Div Mean Max Min Where "
    "Neg CastLike Pow Mod Abs Acos Acosh Asin Asinh Atan Atanh Celu Cos Cosh Elu Exp Log Mish Reciprocal Selu Shrink "
    "Sin Sinh Softplus Softsign Sqrt Swish Tan ThresholdedRelu"
).split())


def register(*op_types: str, values: tuple[int, ...] = (), **facts) -> Callable[[Rule], Rule]:
    return RULES.register(*op_types, **({"values": values} if values else {}), **facts)


def value_inputs(node: onnx.NodeProto) -> list[str]:
    """The inputs of ``node`` whose values its rule reads at build time."""
    slots = RULES.fact(node.op_type, "values", ())
    return [node.input[s] for s in slots if s < len(node.input) and node.input[s]]
