"""Copying and rearranging ops: Expand and Tile (sum the copies), DepthToSpace and SpaceToDepth
(the inverse permutation), Trilu (the same mask), CenterCropPad (the crop padded back, the pad
cropped)."""

from __future__ import annotations

import numpy as np

from cnncli.reverse.builder import Builder, shape_of, unsupported
from cnncli.reverse.rules import register


def unbroadcast(b: Builder, node, g: str, from_shape, to_shape) -> str:
    """Sum a signal shaped ``from_shape`` over the axes along which ``to_shape`` was broadcast, the
    batch axis (the reverse rows) kept apart: a tensor of lower rank gets the rows stacked on its
    first axis, as the reshape rules do. A broadcast along the batch axis itself sums the whole
    output-shaped signal."""
    lead = len(from_shape) - len(to_shape)
    if lead < 0:
        raise unsupported(node, "with an operand of higher rank than its output is not supported")
    aligned = [None] * lead + list(to_shape)
    if from_shape[0] != 1 and aligned[0] != from_shape[0]:  # copies along the batch axis: one
        return b.reduce_to(g, from_shape, to_shape)      # signal shaped as the output, summed whole
    axes = [i for i in range(1, len(from_shape)) if aligned[i] is None or (aligned[i] == 1 and from_shape[i] != 1)]
    if axes:
        g = b.op("ReduceSum", [g, b.ints(axes)], "unbroadcast", keepdims=1)
    return b.reshape(g, to_shape, "unbroadcast") if lead else g


@register("Expand")
def _expand(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    return {x: unbroadcast(b, node, grads[0], shape_of(b, node.output[0]), shape_of(b, x))}


@register("Tile", values=(1,))
def _tile(b: Builder, node, a, grads) -> dict:
    """y = x repeated r_i times along axis i: the signal of the copies, summed."""
    x = node.input[0]
    xs = shape_of(b, x)
    reps = b.value(node.input[1])
    if reps is None:
        raise unsupported(node, "with repeats that could not be computed is not supported")
    reps = [int(r) for r in reps.reshape(-1)]
    if reps[0] == 1:  # the batch axis kept: the reverse rows stay on it
        split = [-1] + [v for r, n in zip(reps[1:], xs[1:]) for v in (r, n)]
        axes = list(range(1, 2 * len(xs) - 1, 2))
    else:  # copies along the batch axis: one signal shaped as the output
        split = [v for r, n in zip(reps, xs) for v in (r, n)]
        axes = list(range(0, 2 * len(xs), 2))
    g = b.op("Reshape", [grads[0], b.ints(split)], "tiles")
    return {x: b.op("ReduceSum", [g, b.ints(axes)], "untile", keepdims=0)}


def _unpermute(b: Builder, g: str, middle, perm, xs) -> str:
    """The adjoint of Reshape(x, ·) → Transpose(perm) → Reshape(y): the permuted shape back, the
    inverse transpose, the input shape (all with the batch axis free)."""
    permuted = [middle[p] for p in perm]
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    g = b.reshape(g, permuted, "perm")
    g = b.op("Transpose", [g], "T", perm=inverse)
    return b.reshape(g, xs, "unperm")


@register("DepthToSpace")
def _depth_to_space(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    n, c, h, w = shape_of(b, x)
    s = int(a["blocksize"])
    if a.get("mode", "DCR") == "CRD":
        middle, perm = [n, c // (s * s), s, s, h, w], [0, 1, 4, 2, 5, 3]
    else:
        middle, perm = [n, s, s, c // (s * s), h, w], [0, 3, 4, 1, 5, 2]
    return {x: _unpermute(b, grads[0], middle, perm, [n, c, h, w])}


@register("SpaceToDepth")
def _space_to_depth(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    n, c, h, w = shape_of(b, x)
    s = int(a["blocksize"])
    perm = [0, 1, 3, 5, 2, 4] if a.get("mode", "DCR") == "CRD" else [0, 3, 5, 1, 2, 4]  # CRD: opset 28
    return {x: _unpermute(b, grads[0], [n, c, h // s, s, w // s, s], perm, [n, c, h, w])}


@register("Trilu", values=(1,))
def _trilu(b: Builder, node, a, grads) -> dict:
    x = node.input[0]
    xs = shape_of(b, x)
    k = 0
    if len(node.input) > 1 and node.input[1]:
        v = b.value(node.input[1])
        if v is None:
            raise unsupported(node, "with a diagonal offset k that could not be computed is not supported")
        k = int(v.reshape(-1)[0])
    ones = np.ones(xs[-2:], dtype=np.float32)
    mask = np.triu(ones, k) if int(a.get("upper", 1)) else np.tril(ones, k)
    return {x: b.op("Mul", [grads[0], b.const(mask, "trilu_mask")], "trilu_T")}


@register("CenterCropPad", values=(1,))
def _center_crop_pad(b: Builder, node, a, grads) -> dict:
    """Each axis cropped or zero-padded to its size about the centre (the extra half value at the
    end, as onnx's reference): the signal padded back with zeros where it cropped, cropped where
    it padded. Along the batch axis the signal is one tensor shaped as the output, as for Tile."""
    x = node.input[0]
    xs = shape_of(b, x)
    sizes = b.value(node.input[1])
    if sizes is None:
        raise unsupported(node, "with sizes that could not be computed is not supported")
    axes = [int(ax) % len(xs) for ax in a.get("axes", range(len(xs)))]
    g = grads[0]
    for ax, size in zip(axes, (int(s) for s in sizes.reshape(-1))):
        dim = xs[ax]
        if size == dim:
            continue
        start = abs(dim - size) // 2
        if size < dim:  # cropped: the signal back in place, zeros around it
            pads = [0] * (2 * len(xs))
            pads[ax], pads[len(xs) + ax] = start, dim - size - start
            g = b.op("Pad", [g, b.ints(pads)], "uncrop")
        else:  # padded: the signal of the copied values
            g = b.op("Slice", [g, b.ints([start]), b.ints([start + dim]), b.ints([ax])], "unpad")
    return {x: g}
