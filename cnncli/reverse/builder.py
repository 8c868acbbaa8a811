"""The reverse-graph builder: a deconvnet / gradient / guided-backprop pass as an ONNX graph.

Given an analysed forward graph and a target tensor, :func:`build_reverse` writes an opset-17
ONNX graph that takes a signal shaped like the target (batch K: one row per channel or unit to
project) plus the forward tensors it needs (activations, pooling switches, weights) and returns
the signal in input pixel space. The three modes differ only at ReLU-family activations
(Zeiler & Fergus; Simonyan et al.; Springenberg et al.):

    backprop    R · f'(x)            (the exact gradient)
    deconvnet   f(R)                 (ZF: rectify the reconstruction; max(R, 0) for ReLU)
    guided      f(R) · f'(x)

Every other op is replaced by its exact transpose (its Jacobian's adjoint at the forward point),
so backprop mode is the true gradient. LRN is skipped in deconvnet and guided, as in the paper,
and differentiated exactly in backprop. One small function per op, registered in ``RULES``
(:mod:`cnncli.reverse.rules`) by the op-family modules of this package.
"""

from __future__ import annotations

from collections import ChainMap
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cnncli.choices import MODES
from cnncli.errors import UnsupportedError
from cnncli.frontend.graph import FLOAT_TYPES, Graph, attrs
from cnncli.reverse.rules import ELEMENTWISE, RULES, value_inputs
from cnncli.reverse.values import forward_values

OPSET = 17
SEED = "seed"
OUTPUT = "projection"


@dataclass
class ReverseGraph:
    model: onnx.ModelProto
    needed: list[str]  # forward tensors the reverse graph reads (graph inputs of the same name)
    extra_outputs: dict[str, tuple[str, int]]  # forward node output to add: name -> (MaxPool node name, slot)
    target: str
    input_name: str
    one_row: bool = False  # the reverse graph takes one seed row per run (a rule's signal has no free batch axis)


@dataclass
class Builder:
    graph: Graph
    mode: str
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    needed: dict = field(default_factory=dict)  # forward name -> elem type
    extra_outputs: dict = field(default_factory=dict)
    extra_shapes: dict = field(default_factory=dict)  # shapes of the added forward outputs
    dynamic: set = field(default_factory=set)  # tensors that depend on the input (values or shape)
    signal: set = field(default_factory=set)  # the float tensors among them that the signal flows through
    const_values: object = field(default_factory=dict)  # .get(name) -> value of a constant tensor, or None
    values: dict = field(default_factory=dict)  # values of non-signal tensors computed by the forward graph
    count: int = 0
    one_row: bool = False  # set by a rule whose reverse takes one signal shaped as its whole output
    batch_one: bool = False  # the input's batch axis is one: a tensor whose first axis is not has none

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"r{self.count}/{hint}"

    def fwd(self, name: str) -> str:
        """A forward tensor the reverse pass reads; it becomes a reverse-graph input."""
        self.needed.setdefault(name, self.graph.types.get(name, TensorProto.FLOAT))
        return name

    def const(self, value, hint: str = "c", dtype=np.float32) -> str:
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, values, hint: str = "i") -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint, np.int64)

    def op(self, op_type: str, inputs: list[str], hint: str = "", **kwargs) -> str:
        out = self.fresh(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **kwargs))
        return out

    # shape helpers: the reverse batch K differs from the forward batch, so reshapes keep dim 0 free
    def reshape(self, x: str, fwd_shape, hint: str = "reshape") -> str:
        return self.op("Reshape", [x, self.ints([-1, *fwd_shape[1:]])], hint)

    def zeros_like_batch(self, ref: str, fwd_shape) -> str:
        batch = self.op("Slice", [self.op("Shape", [ref]), self.ints([0]), self.ints([1])], "batch")
        shape = self.op("Concat", [batch, self.ints(list(fwd_shape[1:]))], "zshape", axis=0)
        return self.op("ConstantOfShape", [shape], "zeros", value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0]))

    def reduce_to(self, g: str, from_shape, to_shape) -> str:
        """Sum a signal over the axes along which ``to_shape`` was broadcast up to ``from_shape``.

        A ``to_shape`` of lower rank has no batch axis: the reverse rows (axis 0 of ``g``, the
        forward batch of one) are not summed but stacked along its first axis, as a Reshape's
        reverse ([-1, …]) expects them."""
        if to_shape is None or from_shape is None or tuple(to_shape) == tuple(from_shape):
            return g
        lead = len(from_shape) - len(to_shape)
        rows = 1 if lead and from_shape[0] == 1 else 0
        axes = list(range(rows, lead)) + [
            lead + i for i, (a, b) in enumerate(zip(to_shape, from_shape[lead:])) if a == 1 and b != 1
        ]
        if axes:
            g = self.op("ReduceSum", [g, self.ints(axes)], "unbroadcast", keepdims=1)
        if lead:
            shape = ([-1, *to_shape[1:]] if to_shape else [-1]) if rows else list(to_shape)
            g = self.op("Reshape", [g, self.ints(shape)], "unbroadcast")
        return g

    def float_mask(self, cond: str) -> str:
        return self.op("Cast", [cond], "mask", to=TensorProto.FLOAT)

    def value(self, name: str) -> np.ndarray | None:
        """The value of a tensor that carries no signal (a shape, axes, bounds, indices): stored in
        the model, folded by the front end, or computed by a forward run (see values.py); None if
        it is not known."""
        if not name:
            return None
        v = self.const_values.get(name)
        if v is None:
            ref = self.graph.consts.get(name)
            v = ref.value if ref is not None else None
        if v is None:
            v = self.values.get(name)
        return None if v is None else np.asarray(v)


@dataclass
class View(Builder):
    """A builder that writes into ``outer``'s reverse graph (its nodes, initializers, names and
    forward inputs) but sees a graph of its own: a function body (functions.Body), or an
    elementwise node's tensors given a batch axis (:func:`lifted`)."""

    outer: Builder | None = None
    lifted: frozenset = frozenset()  # forward tensors read with a leading axis of one

    @classmethod
    def of(cls, outer: Builder, graph: Graph, **kw) -> "View":
        return cls(graph, outer.mode, nodes=outer.nodes, inits=outer.inits, needed=outer.needed, outer=outer,
                   extra_outputs=outer.extra_outputs, extra_shapes=outer.extra_shapes, dynamic=outer.dynamic,
                   signal=outer.signal, const_values=outer.const_values, values=outer.values, **kw)

    def fresh(self, hint: str) -> str:
        return self.outer.fresh(hint)

    def fwd(self, name: str) -> str:
        t = self.outer.fwd(name)
        return self.op("Unsqueeze", [t, self.ints([0])], "lift") if name in self.lifted else t


def lifted(b: Builder, node: onnx.NodeProto, outs: list) -> dict | None:
    """An elementwise node on tensors without the batch axis (the input's batch is one, its output's
    first axis is not: a Squeeze or a Reshape dropped the batch, [C, H, W]): the signal holds the
    reverse rows stacked on that axis ([K·C, H, W]), which the forward tensors ([C, H, W]) do not
    broadcast against. Its rule runs with a leading axis of one on the tensors of the output's rank
    ([K, C, H, W] against [1, C, H, W]), and each input's signal is stacked back. None when the
    node keeps the batch axis."""
    ys = b.graph.shape(node.output[0])
    if not b.batch_one or node.op_type not in ELEMENTWISE or not ys or ys[0] in (1, None):
        return None
    names = {n for n in (*node.input, *node.output) if n and b.graph.shape(n) is not None and len(b.graph.shape(n)) == len(ys)}
    graph = replace(b.graph, shapes=ChainMap({n: (1, *b.graph.shape(n)) for n in names}, b.graph.shapes))
    view = View.of(b, graph, lifted=frozenset(names))
    outs = [None if g is None else b.op("Reshape", [g, b.ints([-1, *b.graph.shape(o)])], "lift")
            for g, o in zip(outs, node.output)]
    result = RULES[node.op_type](view, node, attrs(node), outs)
    b.one_row = b.one_row or view.one_row
    return {n: b.reshape(g, b.graph.shape(n), "unlift") if n in names else g for n, g in result.items()}


def shape_of(b: Builder, name: str):
    s = b.graph.shape(name)
    if s is None or None in s:
        raise UnsupportedError(f"the shape of '{name}' is unknown; cannot build its reverse pass")
    return s


def carries_signal(b: Builder, name: str) -> bool:
    """Whether the reverse signal flows into this forward tensor (a float tensor computed from the
    input's values; integer tensors such as shapes and indices carry none)."""
    return bool(name) and name in b.signal


def unsupported(node: onnx.NodeProto, why: str) -> UnsupportedError:
    return UnsupportedError(f"op {node.op_type} (node '{node.name or node.output[0]}') {why}")


def dynamic_tensors(graph: Graph, start: str) -> set[str]:
    """Tensors whose value depends on the input ``start`` (through its values or its shape)."""
    dyn = {start}
    for node in graph.nodes:
        if any(i in dyn for i in node.input if i):
            dyn.update(o for o in node.output if o)
    return dyn


def other_input(graph: Graph, input_name: str, tensor: str) -> str | None:
    """The first model input besides ``input_name`` that ``tensor`` depends on (one that a run
    feeding only ``input_name`` cannot compute it without), or None."""
    for other in graph.inputs:
        if other.name != input_name and tensor in dynamic_tensors(graph, other.name):
            return other.name
    return None


def signal_tensors(graph: Graph, start: str) -> set[str]:
    """The float tensors computed from the values of ``start``: the ones a reverse signal flows
    through. Integer and boolean tensors (Shape, Size, indices, comparisons) stop it, so a shape
    subgraph is never on the reverse path; an output of unknown type counts as float."""
    sig = {start}
    for node in graph.nodes:
        if node.op_type in _NO_SIGNAL_OPS or not any(i in sig for i in node.input if i):
            continue
        if node.op_type == "CastLike" and node.input[0] not in sig:  # (the second input gives its type alone)
            continue
        if node.op_type in _STRAIGHT_THROUGH:  # integer codes of a float signal: it passes them
            sig.add(node.output[0])
            continue
        sig.update(o for o in node.output if o and graph.types.get(o, TensorProto.FLOAT) in FLOAT_TYPES)
    return sig


# float outputs too, but of the input's shape alone
_NO_SIGNAL_OPS = frozenset({"Shape", "Size", "EyeLike", "RandomNormalLike", "RandomUniformLike"})
# an integer output that still carries the signal: quantization, straight-through for the rounding
_STRAIGHT_THROUGH = frozenset({"QuantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"})


def _no_signal(graph: Graph, target: str, start: str, signal: set[str], dynamic: set[str], stop_at) -> str:
    """Why no signal reaches ``start`` from ``target``: it does not depend on it, or only through
    ops with integer outputs that carry none (a QLinearConv's uint8 codes), named."""
    what = f"{'tensor' if stop_at else 'input'} '{start}'"
    if target in dynamic and not stop_at:
        stops = sorted({n.op_type for n in path_nodes(graph, target, dynamic)
                        if any(i in signal for i in n.input if i) and not any(o in signal for o in n.output if o)})
        if stops:
            return (f"tensor '{target}' depends on {what} only through {', '.join(stops)}, whose integer outputs "
                    "carry no reverse signal (a float tensor before it can be projected)")
    return f"tensor '{target}' does not depend on the values of {what}"


def path_nodes(graph: Graph, target: str, dynamic: set[str], stop: str | None = None) -> list[onnx.NodeProto]:
    """Nodes between the input (or the tensor ``stop``) and ``target``, in graph order."""
    producer = {o: n for n in graph.nodes for o in n.output if o}
    wanted, stack, seen = set(), [target], set()
    while stack:
        t = stack.pop()
        if t in seen or t not in dynamic:
            continue
        seen.add(t)
        node = producer.get(t) if t != stop else None
        if node is None:
            continue
        wanted.add(id(node))
        stack.extend(i for i in node.input if i)
    return [n for n in graph.nodes if id(n) in wanted]


def propagate(b: Builder, nodes: list[onnx.NodeProto], grads: dict[str, list[str]]) -> dict[str, list[str]]:
    """Run the rules of ``nodes`` (graph order) backwards from ``grads`` (tensor -> the signals
    arriving there); returns the signals left at the tensors none of ``nodes`` produced."""
    for node in reversed(nodes):
        outs = []
        for o in node.output:
            gs = grads.pop(o, None)
            if not gs:
                outs.append(None)
            elif len(gs) == 1:
                outs.append(gs[0])
            else:
                outs.append(b.op("Sum", gs, "fanin"))
        if all(g is None for g in outs):
            continue
        # (Split, the recurrent layers and the function bodies take a signal at any output)
        if node.op_type not in ("Split", "LSTM", "GRU", "RNN") and not RULES.fact(node.op_type, "any_output") \
                and outs[0] is None:
            raise unsupported(node, "reaches the target only through a secondary output; not supported")
        result = lifted(b, node, outs)
        if result is None:
            result = RULES[node.op_type](b, node, attrs(node), outs)
        for name, g in result.items():
            if name in b.signal:
                grads.setdefault(name, []).append(g)
    return grads


def build_reverse(
    graph: Graph,
    target: str,
    mode: str,
    input_name: str,
    const_values=None,
    stop_at: str | None = None,
) -> ReverseGraph:
    """Write the reverse graph from ``target`` back to the model input ``input_name`` (or, with
    ``stop_at``, back to that intermediate tensor: in backprop mode its output is the gradient of
    the seeded score at ``stop_at``, what Grad-CAM weighs a layer's activations with; the signal
    then flows only through what depends on ``stop_at``, other tensors read as forward values).

    ``const_values``: values of small constant tensors some rules need at build time (Clip
    bounds, Slice starts, Pad pads, ReduceMean axes, Gather indices), looked up with ``.get``;
    values neither there nor folded by the front end (``graph.consts``) are computed by one
    forward run of the subgraph that makes them (:func:`values.forward_values`). The result
    reads forward tensors by their own names; see :func:`bake_constants` to turn weight inputs
    into initializers.
    """
    if mode not in MODES:
        raise ValueError(mode)
    dynamic = dynamic_tensors(graph, input_name)
    start = stop_at or input_name
    signal = signal_tensors(graph, start)
    if target not in signal:
        raise UnsupportedError(_no_signal(graph, target, start, signal, dynamic, stop_at))
    nodes = path_nodes(graph, target, signal, stop_at)
    b = Builder(graph, mode, dynamic=dynamic, signal=signal, const_values=const_values if const_values is not None else {},
                batch_one=(graph.shape(input_name) or (None,))[:1] == (1,))
    for node in nodes:  # check every op first: one clear error before any work
        if node.op_type not in RULES or node.domain not in ("", "ai.onnx"):
            raise UnsupportedError(
                f"op {node.op_type} (node '{node.name or node.output[0]}') lies between the input and "
                f"'{target}' and has no reverse rule; supported: {', '.join(sorted(RULES))}"
            )
    wanted = [n for node in nodes for n in value_inputs(node) if b.value(n) is None]
    if wanted:
        b.values = forward_values(graph, list(dict.fromkeys(wanted)), signal)
    grads = propagate(b, nodes, {target: [SEED]})
    final = grads.get(start)
    if not final:
        raise UnsupportedError(f"no signal from '{target}' reaches '{start}'")
    result = final[0] if len(final) == 1 else b.op("Sum", final, "fanin")
    b.nodes.append(helper.make_node("Identity", [result], [OUTPUT], name="output"))
    target_shape = shape_of(b, target)
    in_shape = shape_of(b, start)
    inputs = [helper.make_tensor_value_info(SEED, TensorProto.FLOAT, ["K", *target_shape[1:]])]
    for name, elem in b.needed.items():
        shape = graph.shape(name) if name not in b.extra_shapes else b.extra_shapes[name]
        if shape and name in dynamic:  # (a scalar computed from the input, a dynamic scale, has no batch axis)
            shape = ["N", *shape[1:]]  # the forward batch: 1 (shared by all rows) or K (one each)
        inputs.append(helper.make_tensor_value_info(name, elem, list(shape) if shape is not None else None))
    outputs = [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["K", *in_shape[1:]])]
    g = helper.make_graph(b.nodes, f"reverse_{mode}", inputs, outputs, b.inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="cnncli")
    model.ir_version = 8
    # (a target whose first axis is not 1 takes one signal shaped as itself anyway)
    return ReverseGraph(model, list(b.needed), dict(b.extra_outputs), target, input_name,
                        b.one_row and target_shape[0] == 1)


def bake_constants(reverse: ReverseGraph, values: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of the reverse model with the given forward tensors stored as initializers."""
    model = onnx.ModelProto()
    model.CopyFrom(reverse.model)
    keep = [i for i in model.graph.input if i.name not in values]
    baked = [i for i in model.graph.input if i.name in values]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    for vi in baked:
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(values[vi.name]), vi.name))
    return model
