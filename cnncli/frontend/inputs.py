"""Checks of the input shapes a user sets (``--input-shape``, ``--batch``) against the model."""

from __future__ import annotations

from typing import Callable

import onnx

from cnncli.errors import BadArgument, ModelError


def _text(shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def check_ranks(graph: onnx.GraphProto, input_shapes: dict[str, tuple[int, ...]]) -> None:
    """An --input-shape whose rank differs from the input's declared rank, or of more elements
    than int64 counts, is refused (exit 2)."""
    from cnncli.frontend.wellformed import dims_problem

    for name, given in input_shapes.items():
        why = dims_problem(given)
        if why is not None:
            raise BadArgument("--input-shape", f"input '{name}' has {why}")
    for vi in graph.input:
        given = input_shapes.get(vi.name)
        tt = vi.type.tensor_type
        if given is None or not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
            continue
        declared = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
                    for d in tt.shape.dim]
        if len(declared) != len(given):
            raise BadArgument(
                "--input-shape",
                f"input '{vi.name}' has {len(declared)} dims ({_text(declared)}), "
                f"but {_text(given)} has {len(given)}",
            )


def _feeding_inputs(node: onnx.NodeProto, producers: dict, inputs: set[str]) -> list[str]:
    """The graph inputs ``node``'s first input is computed from."""
    found, stack, seen = [], [node.input[0]], set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in inputs:
            found.append(name)
        elif name in producers:
            stack.extend(i for i in producers[name].input if i)
    return found


def check_conv_channels(nodes, info, shapes: dict, attrs: Callable, input_shapes: dict[str, tuple[int, ...]]) -> None:
    """A Conv fed more or fewer channels than its weight takes: exit 2 naming the input when the
    user set that input's shape, a model error otherwise. ``info``: cnncli.frontend.graph.node_table(nodes)."""
    for node, ni in zip(nodes, info):
        if ni.op != "Conv" or ni.domain not in ("", "ai.onnx") or len(ni.inputs) < 2:
            continue
        x, w = shapes.get(ni.inputs[0]), shapes.get(ni.inputs[1])
        if not x or not w or len(x) < 2 or len(w) < 2 or x[1] is None or w[1] is None:
            continue
        if x[1] == w[1] and not any(a.name == "group" for a in node.attribute):
            continue  # group 1: the common case, without reading the attributes
        group = int(attrs(node).get("group", 1))
        if x[1] == w[1] * group:
            continue
        label = node.name or node.output[0]
        what = f"conv '{label}' takes {w[1] * group} input channels, but gets {x[1]}"
        if input_shapes:
            producers = {o: n for n in nodes for o in n.output if o}
            named = _feeding_inputs(node, producers, set(input_shapes))
            if named:
                raise BadArgument("--input-shape", f"input '{named[0]}' {_text(input_shapes[named[0]])}: {what}")
        raise ModelError(f"{what} (the model's shapes do not fit together)")


def batch_warning(batch: int, filled: bool, inputs, input_shapes: dict) -> str | None:
    """--batch N (N > 1) that no input takes: say so, with how to set a fixed batch instead."""
    if batch == 1 or filled:
        return None
    fixed = [s for s in inputs if s.name not in input_shapes]
    if not fixed:
        return f"--batch {batch} is ignored: every input's shape is set with --input-shape"
    s = fixed[0]
    example = "x".join(str(d) for d in (batch, *s.shape[1:]))
    return (f"--batch {batch} is ignored: input '{s.name}' has a fixed batch size "
            f"({_text(s.shape)}); use --input-shape {s.name}={example} to change it")
