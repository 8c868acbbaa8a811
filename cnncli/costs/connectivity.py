"""What a conv layer would cost fully connected, locally connected, and with shared weights.

Seed example: a 100×100 image into 10^5 hidden units is 10^9 weights fully connected, 9×10^5
locally connected with 3×3 windows, and 9 with one shared 3×3 kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cnncli.errors import CnnError
from cnncli.frontend.graph import Graph, numel
from cnncli.columns import col


@dataclass(frozen=True)
class ConnectivityRow:
    index: int | None = col("#", "int", compact=True, doc="conv number")
    name: str = col("name", compact=True, doc="node name in the model")
    input_shape: list | None = col("input", "shape")
    output_shape: list | None = col("output", "shape", unit="N×C×H×W", doc="output tensor shape")
    shared: int | None = col("shared", "int", unknown=True, compact=True, unit="weights",
                             doc="weights of the conv as it is (one kernel per output channel, bias excluded)")
    local: int | None = col("local", "int", unknown=True, compact=True, unit="weights",
                            doc="weights with one unshared window per output unit")
    full: int | None = col("full", "int", unknown=True, compact=True, unit="weights",
                           doc="weights if every input pixel fed every output unit")
    full_over_local: float | int | None = col("full/local", "int", unknown=True, compact=True, unit="×",
                                              doc="how many times fewer weights local windows need than full connection")
    local_over_shared: float | int | None = col("local/shared", "int", unknown=True, compact=True, unit="×",
                                                doc="how many times fewer weights sharing needs than local windows")


def _ratio(a: int | None, b: int | None) -> int | float | None:
    if a is None or not b:
        return None
    return a // b if a % b == 0 else round(a / b, 3)


def connectivity_row(index, name, in_shape, out_shape, weight_shape) -> ConnectivityRow:
    """Per-sample weight counts of one conv (the batch dim is left out: weights don't scale with it)."""
    x = numel(in_shape[1:]) if in_shape else None
    y = numel(out_shape[1:]) if out_shape else None
    shared = numel(weight_shape)
    # Cout 0 (an empty weight): no output unit, no connection
    local = None if y is None or shared is None or not weight_shape else y * (shared // weight_shape[0] if weight_shape[0] else 0)
    full = None if x is None or y is None else x * y
    return ConnectivityRow(
        index=index,
        name=name,
        input_shape=list(in_shape) if in_shape else None,
        output_shape=list(out_shape) if out_shape else None,
        shared=shared,
        local=local,
        full=full,
        full_over_local=_ratio(full, local),
        local_over_shared=_ratio(local, shared),
    )


def model_connectivity(graph: Graph) -> list[ConnectivityRow]:
    """One row per numbered conv (a Conv, ConvInteger or QLinearConv; ConvTranspose, Gemm and
    MatMul are not local or shared windows); a model without any is an error, not an empty table."""
    from cnncli.frontend.layers import is_numbered, weight_input

    rows = []
    index = 0
    for i, node in enumerate(graph.nodes):
        if not is_numbered(node.op_type, node.domain):
            continue
        index += 1
        rows.append(
            connectivity_row(
                index,
                node.name or node.output[0],
                graph.shape(node.input[0]),
                graph.shape(node.output[0]),
                graph.shape(weight_input(node)),
            )
        )
    if not rows:
        ops = sorted({n.op_type for n in graph.nodes})
        raise CnnError("the model has no Conv layer: connectivity compares a conv's shared weights with local and full "
                       f"connections (the model's ops: {', '.join(ops[:8]) + (', …' if len(ops) > 8 else '') or 'none'})")
    return rows


def calculator(input_hw: tuple[int, ...], units: int, kernel: tuple[int, ...], channels: int = 1) -> ConnectivityRow:
    """The seed's worked example: ``units`` hidden units over an image of ``input_hw`` pixels."""
    x = math.prod(input_hw) * channels
    k = math.prod(kernel) * channels
    full, local, shared = x * units, units * k, k
    return ConnectivityRow(
        index=None,
        name="calculator",
        input_shape=[channels, *input_hw] if channels > 1 else list(input_hw),
        output_shape=[units],
        shared=shared,
        local=local,
        full=full,
        full_over_local=_ratio(full, local),
        local_over_shared=_ratio(local, shared),
    )
