"""Ops that onnx defines by a function body: the reverse of their decomposition.

Attention (masks, causal, grouped kv heads, past key/value, softcap, scale), RotaryEmbedding,
NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss (whose body holds a NegativeLogLikelihoodLoss),
CausalConvWithState, LinearAttention (its body's Scan unrolled: :func:`unroll_scans`) and SwiGLU.
The node is expanded into onnx's own body for its attributes and input types (``onnx.defs``: the
schema's function, or its context-dependent function, inlined by ``onnx.inliner`` as the
``_expanded`` node tests are), the body is analysed as a model of its own
(shapes, folded constants), and the signal goes back through the body's ops by their own rules,
so every mode treats the composite as its parts (no ReLU in these bodies: no rectification). The
intermediate values those rules read are recomputed in the reverse graph from the node's forward
inputs, the body's shape arithmetic kept (any forward batch), its ops written at the reverse
graph's opset 17 (:func:`at_opset17`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx.inliner
from onnx import TensorProto, helper, numpy_helper

from cnncli.errors import UnsupportedError
from cnncli.frontend.graph import attrs
from cnncli.reverse.builder import (OPSET, Builder, View, dynamic_tensors, path_nodes, propagate, signal_tensors,
                                    unsupported)
from cnncli.reverse.rules import RULES, register, value_inputs
from cnncli.reverse.values import forward_values

FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)
_DOMAIN = "cnncli.body"


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), OPSET)


def function_body(node: onnx.NodeProto, types: dict[str, int], shapes: dict, opset: int) -> tuple[onnx.ModelProto, int]:
    """A model holding ``node``'s function body (inputs typed float32 where they are float),
    its intermediate tensors renamed apart, and the opset the body is written at."""
    schema = onnx.defs.get_schema(node.op_type, opset, "")
    full = onnx.NodeProto()
    full.CopyFrom(node)
    for name, at in schema.attributes.items():  # the schema's defaults, as the _expanded tests bind them
        if name not in {a.name for a in node.attribute} and at.default_value.name:
            full.attribute.append(at.default_value)

    def type_of(name):
        t = types.get(name, TensorProto.FLOAT)
        return helper.make_tensor_type_proto(TensorProto.FLOAT if t in FLOATS else t, shapes.get(name))

    fn = onnx.FunctionProto()
    if schema.has_function:
        version = max((v for v in schema.function_opset_versions if v <= opset), default=schema.since_version)
        fn.ParseFromString(schema.get_function_with_opset_version(version))
    elif schema.has_context_dependent_function:
        version = max((v for v in schema.context_dependent_function_opset_versions if v <= opset),
                      default=schema.since_version)
        fn.ParseFromString(schema.get_context_dependent_function_with_opset_version(
            version, full.SerializeToString(), [type_of(i).SerializeToString() for i in node.input]))
    else:
        raise unsupported(node, "has no function body in onnx")
    fn.domain, full.domain = _DOMAIN, _DOMAIN
    body_opset = next((o.version for o in fn.opset_import if o.domain in ("", "ai.onnx")), opset)
    inputs = [helper.make_value_info(i, type_of(i)) for i in dict.fromkeys(node.input) if i]
    outputs = [helper.make_value_info(o, onnx.TypeProto()) for o in node.output if o]
    model = helper.make_model(helper.make_graph([full], "body", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", body_opset), helper.make_opsetid(_DOMAIN, 1)],
                              functions=[fn])
    inlined = onnx.inliner.inline_local_functions(model)
    del inlined.opset_import[:]
    inlined.opset_import.append(helper.make_opsetid("", body_opset))
    if any(n.op_type == "Scan" for n in inlined.graph.node):
        unroll_scans(inlined)
    return inlined, body_opset


def unroll_scans(model: onnx.ModelProto) -> None:
    """Replace each Scan of ``model``'s graph by its body written out once per step (the sequence
    length read from shape inference): Gather takes step t of each scan input, the states go from
    one copy to the next, the per-step outputs are stacked with Unsqueeze and Concat. (LinearAttention's
    recurrence is a Scan; its reverse is then backpropagation through time by the body's rules.)"""
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    dims = {vi.name: [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
            for vi in [*inferred.graph.value_info, *inferred.graph.input]}
    nodes = []
    for k, node in enumerate(model.graph.node):
        if node.op_type != "Scan":
            nodes.append(node)
            continue
        at = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        body, n_scan = at["body"], int(at["num_scan_inputs"])
        n_state = len(node.input) - n_scan
        in_axes = list(at.get("scan_input_axes", [0] * n_scan))
        in_dirs = list(at.get("scan_input_directions", [0] * n_scan))
        n_out = len(body.output) - n_state
        out_axes = list(at.get("scan_output_axes", [0] * n_out))
        out_dirs = list(at.get("scan_output_directions", [0] * n_out))
        xs = dims.get(node.input[n_state]) or [None]
        steps = xs[in_axes[0] % len(xs)] if xs else None
        if not steps:
            raise UnsupportedError("a Scan in a function body runs over a sequence of unknown length "
                                   f"('{node.input[n_state]}')")
        states, per_step = list(node.input[:n_state]), [[] for _ in range(n_out)]
        for t in range(steps):
            step = f"scan{k}_t{t}/"
            rename = {}
            for j, vi in enumerate(body.input):
                if j < n_state:
                    rename[vi.name] = states[j]
                    continue
                i = j - n_state
                at_t = t if not in_dirs[i] else steps - 1 - t
                idx = numpy_helper.from_array(np.asarray(at_t, np.int64), step + f"idx{i}")
                nodes.append(helper.make_node("Constant", [], [idx.name], value=idx))
                nodes.append(helper.make_node("Gather", [node.input[j], idx.name], [step + vi.name], axis=in_axes[i]))
                rename[vi.name] = step + vi.name
            for bn in body.node:
                copy = onnx.NodeProto()
                copy.CopyFrom(bn)
                copy.name = step + (bn.name or bn.output[0])
                copy.input[:] = [rename.get(i, i) for i in bn.input]
                for o in bn.output:
                    rename[o] = step + o if o else o
                copy.output[:] = [rename[o] for o in bn.output]
                nodes.append(copy)
            states = [rename.get(o.name, o.name) for o in body.output[:n_state]]
            for i, o in enumerate(body.output[n_state:]):
                per_step[i].append(rename.get(o.name, o.name))
        for name, final in zip(node.output[:n_state], states):
            if name:
                nodes.append(helper.make_node("Identity", [final], [name]))
        for i, name in enumerate(node.output[n_state:]):
            if not name:
                continue
            parts = per_step[i][::-1] if out_dirs[i] else per_step[i]
            axes = numpy_helper.from_array(np.asarray([out_axes[i]], np.int64), f"scan{k}/axes{i}")
            nodes.append(helper.make_node("Constant", [], [axes.name], value=axes))
            rows = [f"scan{k}/out{i}_{t}" for t in range(steps)]
            nodes += [helper.make_node("Unsqueeze", [p, axes.name], [r]) for p, r in zip(parts, rows)]
            nodes.append(helper.make_node("Concat", rows, [name], axis=out_axes[i]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)


@dataclass
class Body(View):
    """The builder of a function body: its rules write into the enclosing builder's graph; the
    forward values they read are the node's inputs (the enclosing graph's) or recomputed."""

    outer_inputs: set = field(default_factory=set)  # the node's inputs: tensors of the enclosing graph
    made: dict = field(default_factory=dict)  # body tensor -> reverse-graph tensor holding its value
    producer: dict = field(default_factory=dict)
    opset: int = OPSET

    def fwd(self, name: str) -> str:
        if name in self.made:
            return self.made[name]
        if name in self.outer_inputs:
            return self.outer.fwd(name)
        v = self.value(name)
        if v is not None and name not in self.dynamic:
            self.made[name] = self.const(v, "body_const", v.dtype)
            return self.made[name]
        node = self.producer.get(name)
        if node is None:
            raise UnsupportedError(f"the value of '{name}' in a function body could not be recomputed")
        outs = [self.fresh(f"body_{node.op_type}") if o else "" for o in node.output]
        for o, new in zip(node.output, outs):
            if o:
                self.made[o] = new
        for n in at_opset17(self, node, [self.fwd(i) if i else "" for i in node.input], outs):
            self.nodes.append(n)
        return self.made[name]


_REDUCE = {"ReduceMax", "ReduceMin", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
           "ReduceLogSumExp", "ReduceSumSquare"}
_HARMLESS = {"saturate", "round_mode"}  # attributes of later Cast versions, moot between float types


def at_opset17(b: Body, node: onnx.NodeProto, ins: list[str], outs: list[str]) -> list[onnx.NodeProto]:
    """``node`` of the body (opset ``b.opset``) as opset-17 nodes reading ``ins``, writing ``outs``;
    float casts go to float32 (the reverse graph's type)."""
    op, at = node.op_type, {a.name: helper.get_attribute_value(a) for a in node.attribute}
    name = outs[0]
    if op == "Cast" and at.get("to") in FLOATS:
        at = {"to": TensorProto.FLOAT}
    if op == "Swish":  # (opset 24) x · sigmoid(alpha x)
        ax = b.op("Mul", [ins[0], b.const(float(at.get("alpha", 1.0)))], "swish_ax")
        return [helper.make_node("Mul", [ins[0], b.op("Sigmoid", [ax])], outs, name=name)]
    if op in ("Softmax", "LogSoftmax"):  # a fully masked row (all -inf) is NaN, which the body then replaces;
        y = b.op(op, ins, op.lower(), **at)  # its reverse reads 0 there (no signal) instead of NaN
        return [helper.make_node("Where", [b.op("IsNaN", [y]), b.const(0.0), y], outs, name=name)]
    if op == "Pad" and len(ins) > 3 and ins[3]:  # (opset 18) pads for some axes: pads for all
        axes, rank = b.value(node.input[3]), len(b.graph.shape(node.input[0]))
        if axes is None:
            raise unsupported(node, "in a function body, with axes computed at run time, is not supported")
        axes = [int(v) % rank for v in axes.reshape(-1)]
        k = len(axes)
        pick = [axes.index(i) if i in axes else 2 * k for i in range(rank)]
        pick += [k + axes.index(i) if i in axes else 2 * k for i in range(rank)]
        pads = b.op("Gather", [b.op("Concat", [ins[1], b.ints([0])], "pads", axis=0), b.ints(pick)], "pads_all")
        return [helper.make_node("Pad", [ins[0], pads, ins[2]], outs, name=name, **at)]
    if op in _REDUCE and len(ins) > 1 and ins[1]:
        axes = b.value(node.input[1])
        if axes is None:
            raise unsupported(node, "in a function body, with axes computed at run time, is not supported")
        extra = {"axes": [int(v) for v in axes.reshape(-1)]} if axes.size else {}
        kept = {k: v for k, v in at.items() if k != "noop_with_empty_axes"}
        return [helper.make_node(op, ins[:1], outs, name=name, **kept, **extra)]
    if op == "Split" and "num_outputs" in at:
        shape = b.graph.shape(node.input[0])
        axis = int(at.get("axis", 0))
        n, k = shape[axis], int(at["num_outputs"])
        size = -(-n // k)
        sizes = [min(size, n - i * size) for i in range(k)]
        return [helper.make_node("Split", [ins[0], b.ints(sizes)], outs, name=name, axis=axis)]
    try:
        old = onnx.defs.get_schema(op, OPSET, "")
    except onnx.defs.SchemaError:
        raise unsupported(node, "in a function body is newer than opset 17; its value cannot be recomputed") from None
    new = onnx.defs.get_schema(op, b.opset, "")
    if new.since_version != old.since_version:
        dropped = set(at) - set(old.attributes)
        if dropped - _HARMLESS or len(ins) > len(old.inputs) and old.inputs[-1].option != old.inputs[-1].option.Variadic:
            raise unsupported(node, f"in a function body (opset {b.opset}) has no opset-17 form here")
        at = {k: v for k, v in at.items() if k not in dropped}
    while ins and not ins[-1]:
        ins = ins[:-1]
    return [helper.make_node(op, ins, outs, name=name, **at)]


def through_body(b: Builder, node: onnx.NodeProto, grads: list) -> dict:
    """The signals of ``node``'s inputs: ``grads`` (at its outputs) taken back through its body."""
    from cnncli.frontend.graph import analyse

    shapes = {i: b.graph.shape(i) for i in node.input if i}
    model, body_opset = function_body(node, b.graph.types, shapes, _opset(b.graph.model))
    known = {i: b.value(i) for i in node.input if i and i not in b.dynamic}
    known = {i: v for i, v in known.items() if v is not None}
    inputs = [vi for vi in model.graph.input if vi.name not in known]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    for name, v in known.items():
        v = np.asarray(v)
        model.graph.initializer.append(numpy_helper.from_array(v.astype(np.float32) if v.dtype.kind == "f" else v, name))
    graph = analyse(model)
    outer = {vi.name for vi in inputs}
    signal, dynamic = set(), set()
    for name in outer:
        if name in b.signal:
            signal |= signal_tensors(graph, name)
        if name in b.dynamic:
            dynamic |= dynamic_tensors(graph, name)
    body = Body(graph, b.mode, nodes=b.nodes, inits=b.inits, dynamic=dynamic, signal=signal, const_values=known,
                outer=b, opset=body_opset,
                outer_inputs=outer, producer={o: n for n in graph.nodes for o in n.output if o})
    seeds = {o: [g] for o, g in zip(node.output, grads) if o and g is not None}
    wanted = {id(n): n for o in seeds for n in path_nodes(graph, o, signal)}
    nodes = [n for n in graph.nodes if id(n) in wanted]
    for n in nodes:
        if n.op_type not in RULES:
            raise unsupported(node, f"holds {n.op_type} in its function body, which has no reverse rule")
    if any(n.op_type == "Transpose" and (attrs(n).get("perm") or [1])[0] != 0 for n in nodes):
        b.one_row = True  # the body moves the batch axis (LinearAttention runs time-major): one signal per run
    need = [v for n in nodes for v in value_inputs(n) if body.value(v) is None]
    if need:
        body.values = forward_values(graph, list(dict.fromkeys(need)), signal)
    left = propagate(body, nodes, seeds)
    if body.extra_outputs:
        raise unsupported(node, "has a function body whose reverse needs pooling switches; not supported")
    b.one_row = b.one_row or body.one_row
    out = {}
    for name in outer & set(left):
        gs = left[name]
        out[name] = gs[0] if len(gs) == 1 else b.op("Sum", gs, "fanin")
    return out


@register("Attention", "RotaryEmbedding", "NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss",
          "CausalConvWithState", "SwiGLU", "LinearAttention", any_output=True)
def _through_body(b: Builder, node, a, grads) -> dict:
    return through_body(b, node, grads)
