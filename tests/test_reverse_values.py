"""Values the reverse rules read at build time when the graph computes them (Slice bounds from a
Shape subgraph, Clip bounds from Cast(Constant), Pad pads, Gather indices), and the signal that
integer tensors never carry.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
import reverse_models as RM
from onnx import TensorProto, helper, numpy_helper

from cnncli.errors import UnsupportedError
from cnncli.frontend.graph import ConstRef, analyse
from cnncli.engine.project import Projector
from cnncli.reverse import build_reverse
from cnncli.reverse.builder import dynamic_tensors, signal_tensors
from cnncli.reverse.rules import value_inputs
from cnncli.reverse.values import forward_values, subgraph_model


def _without_folded_values(graph):
    """The graph as if the front end had folded nothing: only stored constants keep a value."""
    stored = {t.name for t in graph.model.graph.initializer}
    consts = {k: (v if k in stored else ConstRef(v.source, v.numel, v.elem_type)) for k, v in graph.consts.items()}
    return dataclasses.replace(graph, consts=consts)


def _computed(case):
    graph = analyse(case.model)
    sig = signal_tensors(graph, "x")
    names = [n for node in graph.nodes if node.output[0] in dynamic_tensors(graph, "x") for n in value_inputs(node)]
    stored = {t.name for t in case.model.graph.initializer}
    return graph, sig, [n for n in dict.fromkeys(names) if n not in stored]


def _ort_values(case, graph, names):
    """The values as a plain onnxruntime run of the whole model gives them."""
    import onnxruntime as ort

    full = onnx.ModelProto()
    full.CopyFrom(case.model)
    full.graph.output.extend(helper.make_tensor_value_info(n, graph.types[n], None) for n in names)
    session = ort.InferenceSession(full.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(names, {"x": case.input()})))


def test_computed_values_come_from_the_integer_subgraph_alone():
    """chunk's Slice bounds, the clamp bounds and the "same" pads: the cut model that computes them
    holds no Conv (Shape of a tensor of known shape is a constant), reads no model input, and
    gives the values the forward model has."""
    case = RM.computed_constants()
    graph, sig, names = _computed(case)
    assert len(names) >= 5, names
    cut, inputs = subgraph_model(graph, names)
    ops = {n.op_type for n in cut.graph.node}
    assert "Conv" not in ops and "Shape" not in ops, ops
    assert inputs == []
    got = forward_values(graph, names, sig)
    want = _ort_values(case, graph, names)
    for n in names:
        np.testing.assert_array_equal(got[n], want[n])
    slice_ends = [got[node.input[2]] for node in graph.nodes if node.op_type == "Slice"]
    assert [e.tolist() for e in slice_ends] == [[4], [8]]  # (8 + 1) // 2 · 1 and · 2


@pytest.mark.parametrize("mode", ["deconvnet", "backprop", "guided"])
def test_folded_or_computed_values_give_the_same_reverse_graph(mode):
    """Whether the values come from the front end's folding (or the caller), or the builder has
    the forward subgraph compute them, the rules see the same numbers: identical reverse graphs."""
    case = RM.computed_constants()
    graph, _, names = _computed(case)
    computed = build_reverse(_without_folded_values(graph), case.target, mode, "x")
    given = build_reverse(graph, case.target, mode, "x", const_values=_ort_values(case, graph, names))
    folded = build_reverse(graph, case.target, mode, "x")
    assert computed.model.SerializeToString() == given.model.SerializeToString() == folded.model.SerializeToString()


def _model(nodes, inits, out="y", opset=17):
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def test_integer_tensors_carry_no_signal():
    """Shape → Cast → ConstantOfShape depends on x's shape, not its values: no signal reaches it, so a
    Mul by it is a product with a constant, and the projection is the exact gradient."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("ConstantOfShape", ["s"], ["ones"], value=numpy_helper.from_array(np.array([1.5], np.float32))),
        helper.make_node("Mul", ["x", "ones"], ["m"]),
        helper.make_node("Mul", ["m", "x"], ["y"]),
    ]
    model = _model(nodes, [])
    graph = analyse(model)
    sig = signal_tensors(graph, "x")
    assert {"x", "m", "y"} <= sig and not {"s", "ones"} & sig
    assert {"s", "ones"} <= dynamic_tensors(graph, "x")
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)
    p = Projector(model, graph, "x", "y", "backprop")
    R = np.random.default_rng(1).standard_normal((2, 2, 4, 4)).astype(np.float32)
    got = p.run_reverse(R, p.forward(x))
    np.testing.assert_allclose(got, R * 3.0 * x, rtol=1e-6)  # d(1.5·x²)/dx = 3x


def test_a_value_computed_from_the_pixels_is_refused():
    """Clip whose min is the input's own minimum: not a constant, so there is no build-time value
    to read; the error says so instead of using a zero-input value."""
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["lo"], keepdims=0),
        helper.make_node("Clip", ["x", "lo"], ["y"]),
    ]
    model = _model(nodes, [])
    with pytest.raises(UnsupportedError, match="computed from the input's values"):
        build_reverse(analyse(model), "y", "deconvnet", "x")


def test_a_value_that_fails_to_compute_is_one_error_and_no_log_line(capfd):
    """Slice ends from Gather(Shape(x), 7) on a rank-4 x: the values run fails; the error names the
    tensor and onnxruntime's reason in one line, and onnxruntime writes nothing to stderr."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i"], ["g"], axis=0),
        helper.make_node("Slice", ["x", "st", "g", "ax"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array([7], np.int64), "i"),
             numpy_helper.from_array(np.array([0], np.int64), "st"),
             numpy_helper.from_array(np.array([3], np.int64), "ax")]
    model = _model(nodes, inits)
    with pytest.raises(UnsupportedError, match=r"could not compute 'g' for the reverse pass: .*indices element out of") as info:
        build_reverse(analyse(model), "y", "backprop", "x")
    assert "\n" not in str(info.value) and "ONNXRuntimeError" not in str(info.value)
    assert capfd.readouterr().err == ""
