"""How much of the ONNX standard cnncli's per-op rules cover, measured on onnx's own node tests.

The onnx wheel (1.23) ships no ``onnx/backend/test/data/node/*`` files, but it ships the code
that writes them: ``onnx.backend.test.case.node.collect_testcases()`` returns every node test as
a model with its inputs and expected outputs, in memory (no files, no network). Each case is one
node of the standard domain; the ``_expanded`` variants (a function's body), the training and
preview domains, ops on sequences, optionals or strings, and If/Loop/Scan (their cost depends on
data) are left out. Two concerns are checked per case:

* cost: every case with a float input is costed by ``cnncli.stats`` at its declared shapes; it
  passes when its op has a cost rule and no row is unknown (MACs None).
* reverse: for every case whose op onnx's schema marks differentiable from a float input to its
  first output (float), the backprop reverse graph (``Projector``) from that output to each
  such input, the node's other inputs baked in from the case's data, is compared with central
  finite differences of the forward model on onnxruntime: ⟨R, y⟩ along three random directions.
  The forward runs in float64 (the model converted to double) where onnxruntime has the double
  kernel, else in float32 with a looser tolerance; kinks at the data (ties of Max, ReLU at 0)
  are met by accepting a one-sided quotient too. A case onnxruntime cannot run is skipped.

``python tests/node_coverage.py`` prints the table README shows; ``--op NAME`` checks one op.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SKIP_OPS = {"If", "Loop", "Scan"}
# a slot counts as differentiable unless the schema says it is not (LayerNormalization's say "Unknown")
NOT_DIFF = onnx.defs.OpSchema.DifferentiationCategory.NonDifferentiable
UNKNOWN = onnx.defs.OpSchema.DifferentiationCategory.Unknown
GRAD_FLOATS = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
ANY_FLOAT = {t for t in TensorProto.DataType.values() if TensorProto.DataType.Name(t).startswith(("FLOAT", "DOUBLE", "BFLOAT"))}
EPSILONS = {TensorProto.DOUBLE: (1e-5, 1e-4, 1e-3), TensorProto.FLOAT: (3e-3, 1e-3, 1e-2)}
RTOL = {TensorProto.DOUBLE: 1e-3, TensorProto.FLOAT: 2e-2}  # of the larger of |FD|, ‖∇‖·‖v‖


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


def _tensor_type(vi: onnx.ValueInfoProto) -> int | None:
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
                   _tensor_type(v) in (None, TensorProto.STRING) for v in [*g.input, *g.output]) else
               "no test data" if not tc.data_sets else "")
        if why:
            report.excluded[tc.name] = why
            continue
        opset = max(o.version for o in tc.model.opset_import if o.domain in ("", "ai.onnx"))
        ins, outs = tc.data_sets[0]
        report.cases.append(Case(tc.name, node.op_type, opset, tc.model,
                                 {vi.name: _array(a) for vi, a in zip(g.input, ins)}, [_array(a) for a in outs]))
    return report


# ---------------------------------------------------------------- cost


def check_cost(case: Case, float_only: bool = True) -> Outcome | None:
    """None for a case without a float input (unless not ``float_only``)."""
    import cnncli
    from cnncli.costs.rules import COSTS
    from cnncli.errors import CnnError

    inputs = case.model.graph.input
    floats = [v.name for v in inputs if _tensor_type(v) in ANY_FLOAT]
    if not floats and float_only:
        return None
    if case.op not in COSTS:
        return Outcome("missing", "no cost rule")
    data = differentiable_slots(case, strict=True) or (floats or [v.name for v in inputs])[:1]
    if any(0 in np.shape(case.inputs[k]) for k in data):
        return Outcome("skip", "an empty input: a declared 0 dim reads as unknown, --input-shape takes dims of 1 and up")
    model = _retyped(case.model, None, {k: v for k, v in case.inputs.items() if k not in data}, keep_opset=True)
    shapes = {k: tuple(np.shape(v)) for k, v in case.inputs.items() if k in data and np.ndim(v)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = cnncli.stats(model, input_shapes=shapes or None)
    except CnnError as exc:
        return Outcome("missing", f"stats refuses it: {exc}")
    unknown = [row.name for row in s.layers if row.macs is None]
    if unknown or s.unknown_ops:
        return Outcome("missing", f"unknown rows {unknown} {s.unknown_ops}")
    return Outcome("pass")


# ---------------------------------------------------------------- reverse


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
                and _tensor_type(graph_inputs[name]) in GRAD_FLOATS and name not in found:
            found.append(name)
    return found


def differentiable_inputs(case: Case) -> list[str]:
    """The differentiable float inputs (differentiable_slots), when the first output is float and
    differentiable too; [] otherwise."""
    schema = onnx.defs.get_schema(case.op, case.opset, "")
    if not schema.outputs or schema.outputs[0].differentiation_category == NOT_DIFF \
            or _tensor_type(case.model.graph.output[0]) not in GRAD_FLOATS:
        return []
    return differentiable_slots(case)


def _retyped(model: onnx.ModelProto, elem: int | None, consts: dict, keep_opset: bool = False) -> onnx.ModelProto:
    """A copy whose float tensors are of type ``elem`` (None: as they are), ``consts`` (name ->
    array) stored as initializers instead of inputs, at the opset the node's own version needs
    (onnxruntime may not know the case's newer opset; the op's semantics are the same)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    np_type = helper.tensor_dtype_to_np_dtype(elem) if elem is not None else None
    for vi in [*g.input, *g.output, *g.value_info]:
        if elem is not None and _tensor_type(vi) in GRAD_FLOATS:
            vi.type.tensor_type.elem_type = elem
    types = {vi.name: _tensor_type(vi) for vi in g.input}
    keep = [vi for vi in g.input if vi.name not in consts]
    del g.input[:]
    g.input.extend(keep)
    for name, value in consts.items():
        arr = np.asarray(value)
        if np_type is not None and arr.dtype.kind == "f":
            arr = arr.astype(np_type)
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
    opset = max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    since = onnx.defs.get_schema(g.node[0].op_type, opset, "").since_version
    del m.opset_import[:]
    m.opset_import.append(helper.make_opsetid("", max(since, 7)))
    m.ir_version = max(helper.find_min_ir_version_for(list(m.opset_import)), 7)
    return m


class Forward:
    """⟨R, y(x)⟩ by onnxruntime, in float64 where the kernels exist."""

    def __init__(self, case: Case, name: str):
        import onnxruntime as ort

        ort.set_default_logger_severity(3)
        consts = {k: v for k, v in case.inputs.items() if k != name}
        self.name, self.out = name, case.model.graph.output[0].name
        for elem in (TensorProto.DOUBLE, TensorProto.FLOAT):
            try:
                model = _retyped(case.model, elem, consts)
                self.session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
                self.elem, self.dtype = elem, helper.tensor_dtype_to_np_dtype(elem)
                self.y(np.asarray(case.inputs[name], np.float32).astype(np.float64))
                return
            except Exception as exc:  # no kernel of this type: try the next
                self.error = exc
        raise RuntimeError(str(self.error).splitlines()[0][:160])

    def y(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.out], {self.name: x.astype(self.dtype)})[0].astype(np.float64)


def _agrees(fwd: Forward, R, x, v, expected: float, tol: float) -> bool:
    def quotient(a, b, step):  # output elements that a step takes out of the op's domain (NaN) left out
        ok = np.isfinite(a) & np.isfinite(b)
        return float(np.sum(np.where(ok, R * (a - b), 0.0))) / step

    y0 = None
    for eps in EPSILONS[fwd.elem]:
        yp, ym = fwd.y(x + eps * v), fwd.y(x - eps * v)
        if abs(quotient(yp, ym, 2 * eps) - expected) <= tol:
            return True
        y0 = fwd.y(x) if y0 is None else y0
        if min(abs(quotient(yp, y0, eps) - expected), abs(quotient(y0, ym, eps) - expected)) <= tol:
            return True
    return False


def check_reverse_input(case: Case, name: str) -> Outcome:
    from cnncli.engine.project import Projector
    from cnncli.errors import CnnError, UnsupportedError
    from cnncli.frontend.graph import analyse

    x = np.asarray(case.inputs[name], np.float32)
    if x.ndim == 0 or np.ndim(case.outputs[0]) == 0:
        return Outcome("skip", "a rank-0 tensor: projections need a leading dim")
    if x.size == 0 or np.size(case.outputs[0]) == 0:
        return Outcome("skip", "an empty tensor")
    if not np.isfinite(x).all():
        return Outcome("skip", "the input holds inf or NaN")
    try:
        fwd = Forward(case, name)
    except RuntimeError as exc:
        return Outcome("skip", f"onnxruntime cannot run it: {exc}")
    consts = {k: v for k, v in case.inputs.items() if k != name}
    model = _retyped(case.model, TensorProto.FLOAT, consts)
    out = model.graph.output[0].name
    try:
        proj = Projector(model, analyse(model), name, out, "backprop", max_batch=1 << 30)
        act = proj.forward(x)
        rng = np.random.default_rng(0)
        R = rng.standard_normal(act[out].shape).astype(np.float32)
        grad = proj.run_reverse(R, act).astype(np.float64)
    except UnsupportedError as exc:
        return Outcome("refused", f"{name}: {str(exc)[:200]}")
    except CnnError as exc:
        return Outcome("fail", f"{name}: {str(exc)[:200]}")
    except Exception as exc:  # a rule that crashes is a wrong rule
        return Outcome("fail", f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
    if grad.shape != x.shape:
        return Outcome("fail", f"{name}: gradient shape {grad.shape}, input {x.shape}")
    y = fwd.y(x.astype(np.float64))
    if not np.isfinite(y).all():
        return Outcome("skip", "the output holds inf or NaN")
    xd, singular = x.astype(np.float64), ~np.isfinite(grad)
    if singular.mean() > 0.5:  # an infinite derivative at a domain edge (Acosh at 1): a few positions of a case
        return Outcome("fail", f"{name}: {int(singular.sum())} of {grad.size} gradient values are not finite")
    grad[singular] = 0.0
    floor = 1e-6 * max(np.abs(y).max(), 1.0) * (fwd.elem != TensorProto.DOUBLE)
    Rd = R.astype(np.float64)
    for k in range(3):
        v = np.where(singular, 0.0, rng.standard_normal(x.shape))
        v /= np.linalg.norm(v)
        gd = float(np.sum(grad * v))
        if not _agrees(fwd, Rd, xd, v, gd, RTOL[fwd.elem] * max(np.linalg.norm(grad), abs(gd)) + floor):
            # ties (Max, MaxPool, ReLU at 0) make the derivative along v one-sided per tie: check
            # coordinate by coordinate, where one side of each tie measures the rule's choice
            bad = _coordinates(fwd, Rd, xd, grad, np.flatnonzero(~singular.reshape(-1)), rng, floor)
            if bad:
                return Outcome("fail", f"{name}: the gradient disagrees with finite differences at "
                                       f"{len(bad)} positions (flat index, rule): {bad[:3]}")
            break
    return Outcome("pass", "float64" if fwd.elem == TensorProto.DOUBLE else "float32")


def _coordinates(fwd: Forward, R, x, grad, positions, rng, floor, most=300) -> list:
    if positions.size > most:
        positions = rng.choice(positions, most, replace=False)
    flat, bad = grad.reshape(-1), []
    for q in positions:
        e = np.zeros(x.size)
        e[q] = 1.0
        g = float(flat[q])
        if not _agrees(fwd, R, x, e.reshape(x.shape), g, RTOL[fwd.elem] * (np.abs(flat).max() + abs(g)) + floor):
            bad.append((int(q), round(g, 6)))
    return bad


def check_reverse(case: Case) -> Outcome | None:
    from cnncli.reverse import RULES
    from cnncli.reverse.rules import NO_SIGNAL

    names = differentiable_inputs(case)
    if not names or case.op in NO_SIGNAL:
        return None
    if case.op not in RULES:
        return Outcome("missing", "no reverse rule")
    results = [check_reverse_input(case, n) for n in names]
    for status in ("fail", "pass", "refused"):
        hit = [r for r in results if r.status == status]
        if hit:
            return hit[0]
    return results[0]


def run(op: str | None = None) -> Report:
    report = collect(op)
    for case in report.cases:
        for concern, check in (("cost", check_cost), ("reverse", check_reverse)):
            result = check(case)
            if result is not None:
                getattr(report, concern)[case.name] = result
        if case.name not in report.cost:
            report.cost_other[case.name] = check_cost(case, float_only=False)
    return report


# ---------------------------------------------------------------- the table


def op_status(report: Report, concern: str, opset: int | None = None) -> dict[str, str]:
    """op -> "fail" when a case of it fails, else "pass" when one passes and none lacks a rule
    (the rule may refuse some cases, saying why: listed apart), else "missing"; ops whose cases
    are all skipped are left out."""
    per_op = defaultdict(list)
    for case in report.cases:
        result = getattr(report, concern).get(case.name)
        if result is not None and result.status != "skip" and (opset is None or case.opset == opset):
            per_op[case.op].append(result.status)
    return {op: ("fail" if "fail" in s else "pass" if "pass" in s and "missing" not in s else "missing")
            for op, s in per_op.items()}


def figures(report: Report) -> dict[str, tuple[int, int]]:
    """(ops covered, ops checked) per concern, the floors tests/test_node_coverage.py keeps."""
    out = {}
    for concern in ("cost", "reverse"):
        st = op_status(report, concern)
        out[concern] = (sum(s == "pass" for s in st.values()), len(st))
    return out


def table(report: Report) -> str:
    opsets = sorted({c.opset for c in report.cases})
    lines = ["| opset | cases | cost: ops covered / ops | reverse: ops passing FD / differentiable ops "
             "| reverse: cases passing / refused by their rule / checked |", "|---|---|---|---|---|"]
    for opset in [None, *opsets]:
        names = [c.name for c in report.cases if opset is None or c.opset == opset]
        cells = []
        for concern in ("cost", "reverse"):
            st = op_status(report, concern, opset)
            cells.append(f"{sum(s == 'pass' for s in st.values())} / {len(st)}" if st else "–")
        rev = [report.reverse[n].status for n in names if n in report.reverse and report.reverse[n].status != "skip"]
        cells.append(f"{rev.count('pass')} / {rev.count('refused')} / {len(rev)}" if rev else "–")
        lines.append(f"| {'all' if opset is None else opset} | {len(names)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gaps(report: Report) -> list[str]:
    out = []
    for concern in ("cost", "reverse"):
        st = op_status(report, concern)
        for label in ("fail", "missing"):
            ops = sorted(op for op, s in st.items() if s == label)
            out.append(f"{concern}, {'FAILS' if label == 'fail' else 'not covered'} ({len(ops)}): {', '.join(ops) or '–'}")
    return out


def problems(report: Report, concern: str, status: str) -> list[str]:
    return [f"{case} ({getattr(report, concern)[case].why})" for case in sorted(getattr(report, concern))
            if getattr(report, concern)[case].status == status]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--op", help="check the cases of one op only")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every case not covered and every skip")
    args = parser.parse_args(argv)
    report = run(args.op)
    print(table(report))
    print()
    for line in gaps(report):
        print("- " + line)
    for concern in ("cost", "reverse"):
        for status in ("fail",) + (("missing", "refused", "skip") if args.verbose else ()):
            for line in problems(report, concern, status):
                print(f"  {concern} {status}: {line}", file=sys.stderr if status != "fail" else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
