"""How much of the ONNX standard cnncli's per-op rules cover, measured on onnx's own node tests.

The onnx wheel (1.23) ships no ``onnx/backend/test/data/node/*`` files, but it ships the code
that writes them: ``onnx.backend.test.case.node.collect_testcases()`` returns every node test as
a model with its inputs and expected outputs, in memory (no files, no network). Each case is one
node of the standard domain; the ``_expanded`` variants (a function's body), the training and
preview domains, ops on sequences, optionals or strings, and If/Loop/Scan (their cost depends on
data) are left out. Two concerns are checked per case:

* cost: every case with a float input is costed by ``cnncli.stats``, its data inputs at the
  case's shapes and the rest (axes, sizes, scales, pads: the slots onnx's schema does not mark
  differentiable) stored as constants, as an exporter stores them; it passes when its op has a
  cost rule and no row is unknown (MACs None).
* reverse: for every case whose op onnx's schema does not mark non-differentiable from a float
  input to its first output (float), the backprop reverse graph (``Projector``) from that output
  to each such input, the node's other inputs stored as constants from the case's data, is
  compared with central finite differences of ⟨R, y⟩ (R random) on onnxruntime, along three
  random directions. The forward runs in float64 (the model converted to double) where
  onnxruntime has the double kernels, else in float32 with a looser tolerance. At a kink in
  the data (tied Max inputs, a MaxPool window of equal values, ReLU at 0) one-sided quotients
  count too, and where a random direction still disagrees, positions are checked one by one
  (each side of a tie measures one choice). Cases onnxruntime cannot run, or whose data hold
  inf or NaN, are skipped; a rule that refuses a case (UnsupportedError, e.g. a reduction over
  axis 0, which cnncli takes as the batch) is counted apart from a missing rule.

``python tests/node_coverage.py`` prints the table README shows; ``--op NAME`` checks one op.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import defaultdict

import numpy as np
from node_cases import (ANY_FLOAT, Case, Outcome, Report, collect, differentiable_inputs, differentiable_slots, retyped,
                        same_op_opsets, tensor_type)
from onnx import TensorProto, helper

EPSILONS = {TensorProto.DOUBLE: (1e-5, 1e-4, 1e-3), TensorProto.FLOAT: (3e-3, 1e-3, 1e-2)}
RTOL = {TensorProto.DOUBLE: 1e-3, TensorProto.FLOAT: 2e-2}  # of the larger of |FD|, ‖∇‖·‖v‖

# ---------------------------------------------------------------- cost


def check_cost(case: Case, float_only: bool = True) -> Outcome | None:
    """None for a case without a float input (unless not ``float_only``)."""
    import cnncli
    from cnncli.costs.rules import COSTS
    from cnncli.errors import CnnError

    inputs = case.model.graph.input
    floats = [v.name for v in inputs if tensor_type(v) in ANY_FLOAT]
    if not floats and float_only:
        return None
    if case.op not in COSTS:
        return Outcome("missing", "no cost rule")
    data = differentiable_slots(case, strict=True) or (floats or [v.name for v in inputs])[:1]
    if any(0 in np.shape(case.inputs[k]) for k in data):
        return Outcome("skip", "an empty input: a declared 0 dim reads as unknown, --input-shape takes dims of 1 and up")
    model = retyped(case.model, None, {k: v for k, v in case.inputs.items() if k not in data}, keep_opset=True)
    shapes = {k: tuple(np.shape(v)) for k, v in case.inputs.items() if k in data and np.ndim(v)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = cnncli.stats(model, input_shapes=shapes or None)
    except CnnError as exc:
        return Outcome("missing", f"stats refuses it: {exc}")
    except Exception as exc:  # a crash: never what a cost rule may do
        return Outcome("fail", f"{type(exc).__name__}: {str(exc)[:200]}")
    unknown = [row.name for row in s.layers if row.macs is None]
    if unknown or s.unknown_ops:
        return Outcome("missing", f"unknown rows {unknown} {s.unknown_ops}")
    return Outcome("pass")


# ---------------------------------------------------------------- reverse


class Forward:
    """⟨R, y(x)⟩ by onnxruntime, in float64 where the kernels exist."""

    def __init__(self, case: Case, name: str):
        import onnxruntime as ort

        ort.set_default_logger_severity(3)
        consts = {k: v for k, v in case.inputs.items() if k != name}
        self.name, self.out = name, case.model.graph.output[0].name
        for opset in same_op_opsets(case):  # (onnxruntime has no RoiAlign-22: RoiAlign-16 is the same op)
            for elem in (TensorProto.DOUBLE, TensorProto.FLOAT):
                try:
                    model = retyped(case.model, elem, consts, opset=opset)
                    self.session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
                    self.elem, self.dtype, self.opset = elem, helper.tensor_dtype_to_np_dtype(elem), opset
                    self.y(np.asarray(case.inputs[name], np.float32).astype(np.float64))
                    return
                except Exception as exc:  # no kernel of this type or version: try the next
                    self.error = exc if opset is None else self.error
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
    model = retyped(case.model, TensorProto.FLOAT, consts, opset=fwd.opset)
    out = model.graph.output[0].name
    try:
        proj = Projector(model, analyse(model), name, out, "backprop", max_batch=1 << 30)
        try:
            act = proj.forward(x)
        except CnnError as exc:  # (Attention's float32 kernel refuses masks its float64 path, the body, takes)
            return Outcome("skip", f"onnxruntime cannot run it in float32: {str(exc)[:160]}")
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
    # the reverse graph runs in float32 whatever the forward's type: 1e-6 of the output's scale is
    # its rounding (a gradient that cancels to ~0, as an attention mask's can, is that noise)
    floor = 1e-6 * max(np.abs(y).max(), 1.0)
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
