"""`cnn profile`'s rows: the `cnn stats` rows of a model with the kernel time onnxruntime measured
for each, joined through cnncli.engine.profile_join, and the whole run's figures.

A row's ``macs``, ``params`` and every other `cnn stats` column are the stats row's own (the
same ``compute_stats``); a node that stats gives no row (data movement, a weight producer) gets
one here only when a kernel's time lands on it, with 0 MACs as stats counts it.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, make_dataclass
from typing import Any

from cnncli.columns import col
from cnncli.costs.stats import LayerRow, _display_name
from cnncli.frontend.graph import Graph, nbytes, numel

# the columns a terminal shows by default
_COMPACT = frozenset({"index", "name", "op", "macs", "ms", "ms_share", "gmacs_per_s", "bound", "fused_into"})
_MEASURED = [
    ("ms", "float | None", col("ms", "int", compact=True)),  # median per run of the kernels joined to this node
    ("ms_share", "float | None", col("ms share", "int", compact=True)),  # of the sum of every row's ms
    ("gmacs_per_s", "float | None", col("GMAC/s", "int", compact=True)),  # achieved: macs / ms
    ("bytes", "int | None", col("bytes", "int")),  # inputs + outputs + weights, each tensor once
    ("intensity", "float | None", col("MACs/byte", "int")),
    ("bound", "str | None", col("bound", compact=True)),  # compute or memory, against the machine's peaks
    ("fused_into", "str | None", col("fused into", compact=True)),  # the row whose kernel computes this node
    ("kernels", "str | None", col("kernels")),  # the ops onnxruntime ran for this row
    ("provider", "str", col("provider")),
]


def _stats_fields() -> list[tuple[str, Any, Any]]:
    out = []
    for f in dataclasses.fields(LayerRow):
        meta = {**f.metadata, "compact": f.name in _COMPACT}
        out.append((f.name, f.type, dataclasses.field(metadata=meta)))
    return out


ProfileRow = make_dataclass("ProfileRow", _stats_fields() + _MEASURED, frozen=True)
ProfileRow.__module__ = __name__
ProfileRow.__doc__ = "One `cnn profile` row: the `cnn stats` columns, then the measured ones."


@dataclass(frozen=True)
class ProfileOpRow:
    op: str = col("op", compact=True)
    count: int = col("count", "int", compact=True)
    macs: int | None = col("MACs", "int", compact=True)
    params: int = col("params", "int")
    ms: float | None = col("ms", "int", compact=True)
    ms_share: float | None = col("ms share", "int", compact=True)
    gmacs_per_s: float | None = col("GMAC/s", "int", compact=True)
    bytes: int | None = col("bytes", "int")
    intensity: float | None = col("MACs/byte", "int")
    bound: str | None = col("bound", compact=True)
    provider: str = col("provider")


def stats_nodes(graph: Graph, layers: list) -> list[int]:
    """The node index of each stats row (rows are in graph order, named as compute_stats names them)."""
    out, j = [], 0
    for i, ni in enumerate(graph.info):
        if j < len(layers) and layers[j].op == ni.op and layers[j].name == _display_name(ni, i):
            out.append(i)
            j += 1
    return out


def node_bytes(graph: Graph, i: int) -> int | None:
    """Bytes a node reads and writes: every distinct input (weights included) and output."""
    total = 0
    ni = graph.info[i]
    for t in dict.fromkeys(x for x in (*ni.inputs, *ni.outputs) if x):
        ref = graph.consts.get(t)
        if ref is not None and ref.numel is not None:
            total += nbytes(ref.numel, ref.elem_type)
            continue
        n = numel(graph.shapes.get(t))
        if n is None:
            return None
        total += nbytes(n, graph.types.get(t, 1))
    return total


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def measured_rows(graph: Graph, layers: list, trace, join, peaks) -> tuple[list, dict[str, Any]]:
    """(ProfileRows in graph order, the provider's totals) of one profiled session."""
    runs = len(trace.run_ms)
    per_node: dict[int, list[float]] = {}
    kernels_of: dict[int, list[str]] = {}
    for name, times in trace.kernels.items():
        i = join.home.get(name)
        if i is None:
            continue
        acc = per_node.setdefault(i, [0.0] * runs)
        for r, t in enumerate(times):
            acc[r] += t
        op = trace.kernel_ops.get(name) or name
        domain = trace.kernel_domains.get(name, "")
        if domain not in ("", "ai.onnx", "com.microsoft"):
            op = f"{domain.rsplit('.', 1)[-1]}.{op}"  # com.microsoft.nchwc's Conv: nchwc.Conv
        if op not in kernels_of.setdefault(i, []):
            kernels_of[i].append(op)
    ms = {i: _median(v) for i, v in per_node.items()}
    ms_layers = sum(ms.values())
    stats_at = dict(zip(stats_nodes(graph, layers), layers))
    names = {i: _display_name(ni, i) for i, ni in enumerate(graph.info)}
    ridge = peaks.gmacs_per_s / peaks.gbytes_per_s if peaks.gbytes_per_s else None
    rows = []
    for i in sorted(set(stats_at) | set(ms)):
        base = stats_at.get(i) or _plain_row(graph, i, names[i])
        t = ms.get(i)
        moved = node_bytes(graph, i)
        macs = base.macs
        intensity = round(macs / moved, 3) if macs is not None and moved else None
        bound = None
        if t is not None and ridge is not None and macs is not None:
            bound = "compute" if (intensity or 0) >= ridge else "memory"
        rows.append(ProfileRow(
            **{f.name: getattr(base, f.name) for f in dataclasses.fields(LayerRow)},
            ms=round(t, 4) if t is not None else None,
            ms_share=round(t / ms_layers, 4) if t is not None and ms_layers else None,
            gmacs_per_s=round(macs / (t * 1e6), 3) if t and macs is not None else None,
            bytes=moved, intensity=intensity, bound=bound,
            fused_into=names[join.fused_into[i]] if i in join.fused_into else None,
            kernels="+".join(kernels_of[i]) if i in kernels_of else None,
            provider=trace.provider,
        ))
    unjoined = [sum(trace.kernels[k][r] for k in join.unjoined if k in trace.kernels) for r in range(runs)]
    outer = [times for name, times in trace.kernels.items() if name not in join.nested]
    every = [sum(times[r] for times in outer) for r in range(runs)]
    totals = {
        "provider": trace.provider,
        "runs": runs,
        "ms_run": round(_median(trace.run_ms), 4),
        "ms_run_min": round(min(trace.run_ms), 4) if runs else None,
        "ms_run_max": round(max(trace.run_ms), 4) if runs else None,
        "ms_layers": round(ms_layers, 4),  # the sum of the rows' medians
        "ms_kernels": round(_median(every), 4),  # the median of each run's kernel time (a body's inside its node's)
        "ms_unjoined": round(_median(unjoined), 4),
        "peak_gmacs_per_s": round(peaks.gmacs_per_s, 3),
        "peak_gbytes_per_s": round(peaks.gbytes_per_s, 3),
        "ridge_macs_per_byte": round(ridge, 3) if ridge is not None else None,
    }
    return rows, totals


def _plain_row(graph: Graph, i: int, name: str) -> LayerRow:
    """A row for a node stats shows none for (its time must go somewhere): 0 MACs, as stats counts it."""
    ni = graph.info[i]
    shape_in = graph.shapes.get(ni.inputs[0]) if ni.inputs and ni.inputs[0] else None
    shape_out = graph.shapes.get(ni.outputs[0]) if ni.outputs and ni.outputs[0] else None
    act = numel(shape_out)
    return LayerRow(index=None, name=name, op=ni.op, input_shape=list(shape_in) if shape_in else None,
                    output_shape=list(shape_out) if shape_out else None, kernel=None, stride=None, pads=None,
                    dilation=None, groups=None, macs=0, flops_other=0, params=0, buffers=0, cpr=None,
                    act_bytes=nbytes(act, graph.types.get(ni.outputs[0], 1)) if act is not None else None,
                    rf=None, rf_stride=None)


def by_op(rows: list, ridges: dict[str, float | None]) -> list[ProfileOpRow]:
    """One row per (provider, op type), in order of first appearance; ``ridges``: each provider's
    ridge point (peak MACs per byte), where compute-bound begins."""
    groups: dict[tuple[str, str], list] = {}
    for r in rows:
        groups.setdefault((r.provider, r.op), []).append(r)
    totals = {}
    for (prov, _), rs in groups.items():
        totals[prov] = totals.get(prov, 0.0) + sum(r.ms or 0.0 for r in rs)
    out = []
    for (prov, op), rs in groups.items():
        timed = [r.ms for r in rs if r.ms is not None]
        t = sum(timed) if timed else None
        macs = None if any(r.macs is None for r in rs) else sum(r.macs for r in rs)
        moved = None if any(r.bytes is None for r in rs) else sum(r.bytes for r in rs)
        intensity = round(macs / moved, 3) if macs is not None and moved else None
        ridge = ridges.get(prov)
        out.append(ProfileOpRow(
            op=op, count=len(rs), macs=macs, params=sum(r.params or 0 for r in rs),
            ms=round(t, 4) if t is not None else None,
            ms_share=round(t / totals[prov], 4) if t is not None and totals[prov] else None,
            gmacs_per_s=round(macs / (t * 1e6), 3) if t and macs is not None else None,
            bytes=moved, intensity=intensity,
            bound=None if t is None or ridge is None or macs is None else (
                "compute" if (intensity or 0) >= ridge else "memory"),
            provider=prov))
    return out
