"""Values that the graph computes at run time but that do not depend on the input's pixels.

TorchScript writes ``chunk`` as a Slice whose starts/ends come from Shape → Gather → Add → Div →
Mul, ``torch.clamp(x, 0, 6)`` as a Clip whose bounds are Cast(Constant), and TF-style "same"
padding as a Pad whose pads come from a Shape subgraph. The reverse rules need those values when
they build the reverse graph. :func:`forward_values` gets them with one onnxruntime run of the
forward subgraph that computes them, where Shape and Size of a tensor whose shape the analysis
knows are replaced by constants, so that only the small integer subgraph runs (no convolutions);
a model input that is still needed is fed zeros of its analysed shape.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from cnncli.errors import CnnError, UnsupportedError
from cnncli.frontend.graph import Graph, attrs

def _known_shape(graph: Graph, name: str) -> tuple | None:
    s = graph.shape(name)
    return None if s is None or None in s else tuple(s)


def _as_constant(graph: Graph, node: onnx.NodeProto) -> onnx.NodeProto | None:
    """Shape or Size of a tensor of known shape as a Constant node; None otherwise."""
    if node.op_type not in ("Shape", "Size"):
        return None
    s = _known_shape(graph, node.input[0])
    if s is None:
        return None
    if node.op_type == "Size":
        value = np.asarray(int(np.prod(s)), dtype=np.int64)
    else:
        a = attrs(node)
        value = np.asarray(s, dtype=np.int64)[a.get("start", 0): a.get("end", len(s))]
    return helper.make_node("Constant", [], [node.output[0]], value=numpy_helper.from_array(value))


def subgraph_model(graph: Graph, names: list[str]) -> tuple[onnx.ModelProto, list[str]]:
    """The forward model cut down to what computes ``names``; returns it and the model inputs it reads."""
    model = graph.model
    producer = {o: n for n in model.graph.node for o in n.output if o}
    inits = {t.name: t for t in model.graph.initializer}
    input_names = {i.name for i in model.graph.input} - set(inits)
    keep, used_inits, used_inputs = {}, set(), set()
    stack, seen = list(names), set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in inits:
            used_inits.add(t)
            continue
        if t in input_names:
            used_inputs.add(t)
            continue
        node = producer.get(t)
        if node is None:
            continue
        const = _as_constant(graph, node)
        keep[id(node)] = const if const is not None else node
        if const is None:
            stack.extend(i for i in node.input if i)
    nodes = [keep[id(n)] for n in model.graph.node if id(n) in keep]
    inputs = [i for i in model.graph.input if i.name in used_inputs]
    outputs = [helper.make_tensor_value_info(n, graph.types.get(n, onnx.TensorProto.INT64), None) for n in names]
    g = helper.make_graph(nodes, "values", inputs, outputs, [inits[n] for n in sorted(used_inits)])
    m = helper.make_model(g, opset_imports=list(model.opset_import), producer_name="cnncli")
    m.ir_version = model.ir_version
    m.functions.extend(model.functions)
    return m, [i.name for i in inputs]


def forward_values(graph: Graph, names: list[str], signal: set[str]) -> dict[str, np.ndarray]:
    """The values of ``names``, none of which may depend on the input's values (``signal``)."""
    for name in names:
        if name in signal:
            raise UnsupportedError(f"'{name}' is computed from the input's values, but a reverse rule needs it "
                                   "as a constant (a shape, axes, bounds or indices); not supported")
    model, inputs = subgraph_model(graph, names)
    specs = {s.name: s for s in graph.inputs}
    feeds = {}
    for name in inputs:
        spec = specs[name]
        elem = graph.types.get(name, onnx.TensorProto.FLOAT)
        feeds[name] = np.zeros(spec.shape, dtype=helper.tensor_dtype_to_np_dtype(elem))
    from cnncli.runtime.sessions import make_session, ort_message

    try:
        values = make_session(model.SerializeToString(), "cpu").run(names, feeds)
    except CnnError as exc:  # a failed load or run, as one line
        raise UnsupportedError(f"could not compute {', '.join(repr(n) for n in names[:3])} for the reverse pass: "
                               f"{ort_message(exc)}") from None
    return dict(zip(names, values))
