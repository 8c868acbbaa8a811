"""The node tests of the ONNX standard domain as tests/node_coverage.py checks them: collected
in memory from the onnx wheel (``onnx.backend.test.case.node.collect_testcases``), the left-out
ones with why, and the model rewrites the checks need (float type, inputs stored as constants,
the opset the node's own version needs)."""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SKIP_OPS = {"If", "Loop", "Scan"}
# a slot counts as differentiable unless the schema says it is not (LayerNormalization's say "Unknown")
NOT_DIFF = onnx.defs.OpSchema.DifferentiationCategory.NonDifferentiable
UNKNOWN = onnx.defs.OpSchema.DifferentiationCategory.Unknown
GRAD_FLOATS = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
ANY_FLOAT = {t for t in TensorProto.DataType.values()
             if TensorProto.DataType.Name(t).startswith(("FLOAT", "DOUBLE", "BFLOAT"))}


@dataclass
class Case:
    name: str
    op: str
    opset: int
    model: onnx.ModelProto
    inputs: dict  # graph input name -> array
    outputs: list


@dataclass
class Outcome:
    status: str  # "pass", "fail" (a wrong rule), "refused" (the rule says why not), "missing" (no rule), "skip"
    why: str = ""


@dataclass
class Report:
    cases: list = field(default_factory=list)
    cost: dict = field(default_factory=dict)  # case name -> Outcome
    reverse: dict = field(default_factory=dict)
    excluded: dict = field(default_factory=dict)  # case name -> why
    cost_other: dict = field(default_factory=dict)  # the cases without a float input: not in the table


def tensor_type(vi: onnx.ValueInfoProto) -> int | None:
    t = vi.type
    return t.tensor_type.elem_type if t.HasField("tensor_type") else None


def _array(a) -> np.ndarray:
    return numpy_helper.to_array(a) if isinstance(a, onnx.TensorProto) else np.asarray(a)


def collect(op: str | None = None) -> Report:
    """Every node test case, sorted into the checked and the excluded (with why)."""
    from onnx.backend.test.case.node import collect_testcases

    report = Report()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        found = collect_testcases()
    for tc in found:
        g = tc.model.graph
        if "_expanded" in tc.name:
            continue  # a function's body: the ops it expands to, tested by their own cases
        node = g.node[0]
        if op is not None and node.op_type != op:
            continue
        why = ("domain " + node.domain if node.domain not in ("", "ai.onnx") else
               "control flow: cost depends on data" if node.op_type in SKIP_OPS else
               "an optional value" if node.op_type.startswith("Optional") else
               "sequence, optional or string values" if any(
                   tensor_type(v) in (None, TensorProto.STRING) for v in [*g.input, *g.output]) else
               "no test data" if not tc.data_sets else "")
        if why:
            report.excluded[tc.name] = why
            continue
        opset = max(o.version for o in tc.model.opset_import if o.domain in ("", "ai.onnx"))
        ins, outs = tc.data_sets[0]
        report.cases.append(Case(tc.name, node.op_type, opset, tc.model,
                                 {vi.name: _array(a) for vi, a in zip(g.input, ins)}, [_array(a) for a in outs]))
    return report


def differentiable_slots(case: Case, strict: bool = False) -> list[str]:
    """The float graph inputs in slots the op's schema does not mark non-differentiable (``strict``:
    marks differentiable): the data a node computes on (the others, such as axes, sizes, scales
    or a mask, are what an exporter stores as constants)."""
    node, g = case.model.graph.node[0], case.model.graph
    params = onnx.defs.get_schema(node.op_type, case.opset, node.domain).inputs
    graph_inputs = {v.name: v for v in g.input}
    found = []
    for i, name in enumerate(node.input):
        p = params[min(i, len(params) - 1)] if params else None
        not_data = (NOT_DIFF, UNKNOWN) if strict else (NOT_DIFF,)
        if name in graph_inputs and p is not None and p.differentiation_category not in not_data \
                and tensor_type(graph_inputs[name]) in GRAD_FLOATS and name not in found:
            found.append(name)
    return found


def differentiable_inputs(case: Case) -> list[str]:
    """The differentiable float inputs (differentiable_slots), when the first output is float and
    differentiable too; [] otherwise."""
    schema = onnx.defs.get_schema(case.op, case.opset, "")
    if not schema.outputs or schema.outputs[0].differentiation_category == NOT_DIFF \
            or tensor_type(case.model.graph.output[0]) not in GRAD_FLOATS:
        return []
    return differentiable_slots(case)


def retyped(model: onnx.ModelProto, elem: int | None, consts: dict, keep_opset: bool = False,
            opset: int | None = None) -> onnx.ModelProto:
    """A copy whose float tensors are of type ``elem`` (None: as they are), ``consts`` (name ->
    array) stored as initializers instead of inputs, at the opset the node's own version needs
    (onnxruntime may not know the case's newer opset; the op's semantics are the same), or at
    ``opset`` (one of same_op_opsets)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    np_type = helper.tensor_dtype_to_np_dtype(elem) if elem is not None else None
    for vi in [*g.input, *g.output, *g.value_info]:
        if elem is not None and tensor_type(vi) in GRAD_FLOATS:
            vi.type.tensor_type.elem_type = elem
    types = {vi.name: tensor_type(vi) for vi in g.input}
    keep = [vi for vi in g.input if vi.name not in consts]
    del g.input[:]
    g.input.extend(keep)
    for name, value in consts.items():
        arr = np.asarray(value)
        if np_type is not None and types[name] in GRAD_FLOATS:  # bfloat16's numpy type is no kind "f"
            arr = arr.astype(np.float32).astype(np_type)
        t = numpy_helper.from_array(arr, name)
        if np_type is None and t.data_type != types[name]:  # bfloat16, float8: as the model declares
            t = helper.make_tensor(name, types[name], arr.shape, arr.astype(np.float32).reshape(-1).tolist())
        g.initializer.append(t)
    for node in g.node:
        for a in node.attribute:
            if np_type is not None and a.type == onnx.AttributeProto.TENSOR and a.t.data_type in GRAD_FLOATS:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np_type), a.t.name))
    if keep_opset:
        return m
    if opset is None:
        opset = onnx.defs.get_schema(g.node[0].op_type, max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")),
                                     "").since_version
    since = opset
    del m.opset_import[:]
    m.opset_import.append(helper.make_opsetid("", max(since, 7)))
    m.ir_version = max(helper.find_min_ir_version_for(list(m.opset_import)), 7)
    return m


def same_op_opsets(case: Case) -> list[int | None]:
    """None (the node's own version, as retyped picks it), then the opsets of its earlier versions
    that differ only in the types they take (RoiAlign-22 added bfloat16 to RoiAlign-16): where
    onnxruntime has no kernel of the newer version, the same op at an older one."""
    schema = onnx.defs.get_schema(case.op, case.opset, "")
    out: list[int | None] = [None]
    while schema.since_version > 1:
        try:
            older = onnx.defs.get_schema(case.op, schema.since_version - 1, "")
        except onnx.defs.SchemaError:
            break
        if _signature(older) != _signature(schema):
            break
        out.append(older.since_version)
        schema = older
    return out


def _signature(schema) -> tuple:
    slots = tuple((p.name, p.option) for p in [*schema.inputs, *schema.outputs])
    return slots, tuple(sorted((n, a.type, a.required) for n, a in schema.attributes.items()))
