"""`cnn diff`'s rows: the `cnn stats` rows of two models (or of one model at two shapes) matched
layer by layer: first by node name (same name, same op), then, among the layers left, by position
among the layers of the same op (the k-th Conv left in A with the k-th Conv left in B). What is
left after that pair up in order where they sit between the same matched neighbours with the same
output shape (an op two exporters write differently: GlobalAveragePool and ReduceMean). What is
still unmatched is ``removed`` (only in A) or ``added`` (only in B)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from cnncli.columns import col

MATCHED = ("same", "changed")


@dataclass(frozen=True)
class DiffRow:
    name: str = col("name", compact=True)  # A's name (B's for an added layer)
    name_b: str | None = col("name in B")  # B's name where it differs
    op: str = col("op", compact=True)
    op_b: str | None = col("op in B")  # B's op where it differs
    status: str = col("status", compact=True)  # same, changed, added (only in B), removed (only in A)
    macs_a: int | None = col("MACs A", "int", compact=True)
    macs_b: int | None = col("MACs B", "int", compact=True)
    macs_change: int | None = col("MACs change", "int")
    macs_ratio: float | None = col("MACs B/A", "int", compact=True)
    params_a: int | None = col("params A", "int")
    params_b: int | None = col("params B", "int")
    params_change: int | None = col("params change", "int", compact=True)
    act_bytes_a: int | None = col("act bytes A", "int")
    act_bytes_b: int | None = col("act bytes B", "int")
    act_bytes_change: int | None = col("act bytes change", "int")
    ms_a: float | None = col("ms A", "int", compact=True)  # with --measure: median kernel time per run
    ms_b: float | None = col("ms B", "int", compact=True)
    ms_change: float | None = col("ms change", "int")
    ms_ratio: float | None = col("ms B/A", "int", compact=True)


def match(a: Sequence, b: Sequence) -> list[tuple[int | None, int | None]]:
    """Pairs (index in a, index in b) of rows with ``name``, ``op`` and ``output_shape``: by name
    (names unique on both sides, same op); then by position among the rows left of each op that
    both sides have as many of; then between matched neighbours (the same place in both graphs),
    by position among the rows of the same op there, then in order while output shapes agree
    (from the end where one side has more rows there); then the unmatched, (i, None) or
    (None, j). In A's order, each row only in B after the B row before it."""
    def unique(rows):
        count: dict[str, int] = {}
        for r in rows:
            count[r.name] = count.get(r.name, 0) + 1
        return {r.name: i for i, r in enumerate(rows) if count[r.name] == 1}

    ua, ub = unique(a), unique(b)
    pair_of_b: dict[int, int] = {}
    for name, i in ua.items():
        j = ub.get(name)
        if j is not None and a[i].op == b[j].op:
            pair_of_b[j] = i
    taken_a = set(pair_of_b.values())
    left_a = _by_op([i for i in range(len(a)) if i not in taken_a], a)
    left_b = _by_op([j for j in range(len(b)) if j not in pair_of_b], b)
    for op, rows_a in left_a.items():
        if len(rows_a) == len(left_b.get(op, ())):
            pair_of_b.update(zip(left_b[op], rows_a))
    _in_gaps(a, b, pair_of_b, _same_op)
    _in_gaps(a, b, pair_of_b, _same_shape)
    matched_a = {i: j for j, i in pair_of_b.items()}
    keyed: list[tuple[float, int, tuple[int | None, int | None]]] = []
    for i in range(len(a)):
        keyed.append((float(i), 0, (i, matched_a.get(i))))
    anchor = -1.0
    for j in range(len(b)):
        if j in pair_of_b:
            anchor = float(pair_of_b[j])
        else:
            keyed.append((anchor + 0.5, j, (None, j)))
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [k[2] for k in keyed]


def _by_op(indexes: list[int], rows: Sequence) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i in indexes:
        out.setdefault(rows[i].op, []).append(i)
    return out


def _same_op(a: Sequence, b: Sequence, gap_a: list[int], gap_b: list[int]) -> list[tuple[int, int]]:
    """Within one gap: the rows of each op in order; where the counts differ, each A row with the
    next B row of its op and output shape."""
    ops_b = _by_op(gap_b, b)
    pairs = []
    for op, rows_a in _by_op(gap_a, a).items():
        rows_b = ops_b.get(op, [])
        if len(rows_a) == len(rows_b):
            pairs.extend(zip(rows_a, rows_b))
            continue
        k = 0
        for i in rows_a:
            shape = getattr(a[i], "output_shape", None)
            for m in range(k, len(rows_b)):
                if getattr(b[rows_b[m]], "output_shape", None) == shape:
                    pairs.append((i, rows_b[m]))
                    k = m + 1
                    break
    return pairs


def _same_shape(a: Sequence, b: Sequence, gap_a: list[int], gap_b: list[int]) -> list[tuple[int, int]]:
    """Within one gap: in order while output shapes agree (from the end where one side has more
    rows: several ops written as one, GELU's Div, Erf, Add, Mul, Mul and Gelu, end in the one the
    next layer reads)."""
    if len(gap_a) != len(gap_b):
        gap_a, gap_b = gap_a[::-1], gap_b[::-1]
    pairs = []
    for i, j in zip(gap_a, gap_b):
        if getattr(a[i], "output_shape", None) != getattr(b[j], "output_shape", None):
            break
        pairs.append((i, j))
    return pairs


def _in_gaps(a: Sequence, b: Sequence, pair_of_b: dict[int, int], pairing) -> None:
    """Pair rows left between consecutive matched pairs (the same place in both graphs)."""
    pairs = sorted((i, j) for j, i in pair_of_b.items())
    taken_a = set(pair_of_b.values())
    bounds = [(-1, -1), *pairs, (len(a), len(b))]
    found = []
    for (i0, j0), (i1, j1) in zip(bounds, bounds[1:]):
        if j1 <= j0:
            continue
        gap_a = [i for i in range(i0 + 1, i1) if i not in taken_a]
        gap_b = [j for j in range(j0 + 1, j1) if j not in pair_of_b]
        found.extend(pairing(a, b, gap_a, gap_b))
    for i, j in found:
        pair_of_b[j] = i


def _change(x, y):
    return None if x is None or y is None else y - x


def _ratio(x, y):
    if x is None or y is None or not x:
        return None
    r = y / x
    return int(r) if r == int(r) else round(r, 4)


def diff_rows(a: Sequence, b: Sequence, ms_a: dict[int, float] | None = None,
              ms_b: dict[int, float] | None = None) -> list[DiffRow]:
    """``a``, ``b``: stats rows (name, op, macs, params, act_bytes); ``ms_a``/``ms_b``: measured
    time by row index, with --measure."""
    rows = []
    for i, j in match(a, b):
        ra = a[i] if i is not None else None
        rb = b[j] if j is not None else None
        first = ra or rb
        status = "added" if ra is None else "removed" if rb is None else (
            "same" if (ra.op, ra.macs, ra.params, ra.act_bytes) == (rb.op, rb.macs, rb.params, rb.act_bytes) else "changed")
        ta = ms_a.get(i) if ms_a is not None and i is not None else None
        tb = ms_b.get(j) if ms_b is not None and j is not None else None

        def get(r, key):
            return getattr(r, key) if r is not None else None

        rows.append(DiffRow(
            name=first.name, name_b=rb.name if ra is not None and rb is not None and rb.name != ra.name else None,
            op=first.op, op_b=rb.op if ra is not None and rb is not None and rb.op != ra.op else None, status=status,
            macs_a=get(ra, "macs"), macs_b=get(rb, "macs"), macs_change=_change(get(ra, "macs"), get(rb, "macs")),
            macs_ratio=_ratio(get(ra, "macs"), get(rb, "macs")),
            params_a=get(ra, "params"), params_b=get(rb, "params"),
            params_change=_change(get(ra, "params"), get(rb, "params")),
            act_bytes_a=get(ra, "act_bytes"), act_bytes_b=get(rb, "act_bytes"),
            act_bytes_change=_change(get(ra, "act_bytes"), get(rb, "act_bytes")),
            ms_a=ta, ms_b=tb, ms_change=round(tb - ta, 4) if ta is not None and tb is not None else None,
            ms_ratio=round(tb / ta, 4) if ta and tb is not None else None,
        ))
    return rows


def diff_totals(rows: list[DiffRow], totals_a: dict[str, Any], totals_b: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("macs", "params"):
        out[f"{key}_a"], out[f"{key}_b"] = totals_a.get(key), totals_b.get(key)
        out[f"{key}_change"] = _change(out[f"{key}_a"], out[f"{key}_b"])
        out[f"{key}_ratio"] = _ratio(out[f"{key}_a"], out[f"{key}_b"])
    for status in ("same", "changed", "added", "removed"):
        out[status] = sum(1 for r in rows if r.status == status)
    if "ms_run" in totals_a and "ms_run" in totals_b:
        out["ms_run_a"], out["ms_run_b"] = totals_a["ms_run"], totals_b["ms_run"]
        out["ms_run_ratio"] = round(totals_b["ms_run"] / totals_a["ms_run"], 4) if totals_a["ms_run"] else None
    return out
