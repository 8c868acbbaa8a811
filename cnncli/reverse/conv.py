"""Conv and ConvTranspose: each one's adjoint, with the same weight tensor."""

from __future__ import annotations

from cnncli.frontend.geometry import Window, window
from cnncli.reverse.builder import Builder, carries_signal, shape_of, unsupported
from cnncli.reverse.rules import register


@register("Conv")
def _conv(b: Builder, node, a, grads) -> dict:
    return {node.input[0]: conv_adjoint(b, node, grads[0], b.fwd(node.input[1]))}


def conv_adjoint(b: Builder, node, g: str, weight: str) -> str:
    """The ConvTranspose of the signal ``g`` with ``weight`` (a reverse-graph tensor shaped as
    the node's weight input): the reverse of a Conv, or of a ConvInteger with float weights."""
    x, w = node.input[0], node.input[1]
    if carries_signal(b, w):
        raise unsupported(node, "has a weight computed from the input; not supported")
    xs, ws = shape_of(b, x), shape_of(b, w)
    win = window(node, xs, tuple(ws[2:]))
    out = shape_of(b, node.output[0])
    pads_end, out_pad = transpose_padding(win, xs[2:], out[2:])
    return b.op(
        "ConvTranspose", [g, weight], "conv_T",
        strides=list(win.strides), dilations=list(win.dilations), group=win.group,
        pads=list(win.pads_begin) + pads_end, output_padding=out_pad, kernel_shape=list(win.kernel),
    )


def transpose_padding(win: Window, in_spatial, out_spatial) -> tuple[list[int], list[int]]:
    """Pads and output_padding for the ConvTranspose that is the adjoint of a strided window op.

    The transposed op must produce exactly the forward input size. It covers
    s·(out−1) + d·(k−1) + 1 positions from −pad_begin; what lies past the input is cut by the
    end pad, what is short of it (rows no window reached) is made up by output_padding.
    """
    pads_end, out_pad = [], []
    for n, o, k, s, d, pb in zip(in_spatial, out_spatial, win.kernel, win.strides, win.dilations, win.pads_begin):
        span = s * (o - 1) + d * (k - 1) + 1
        extra = n + pb - span  # > 0: rows at the end no window reached
        pads_end.append(max(-extra, 0))
        out_pad.append(max(extra, 0))
    return pads_end, out_pad


@register("ConvTranspose")
def _conv_transpose(b: Builder, node, a, grads) -> dict:
    x, w = node.input[0], node.input[1]
    if carries_signal(b, w):
        raise unsupported(node, "has a weight computed from the input; not supported")
    xs, ws, ys = shape_of(b, x), shape_of(b, w), shape_of(b, node.output[0])
    k = tuple(a.get("kernel_shape", ws[2:]))
    r = len(k)
    s = a.get("strides", [1] * r)
    d = a.get("dilations", [1] * r)
    op = a.get("output_padding", [0] * r)
    if "pads" in a and a.get("auto_pad", "NOTSET") == "NOTSET":
        begin = a["pads"][:r]
    else:  # auto_pad or output_shape: recover the pads from the sizes, as the spec defines them
        begin = []
        for i in range(r):
            total = s[i] * (xs[2 + i] - 1) + op[i] + (k[i] - 1) * d[i] + 1 - ys[2 + i]
            upper = a.get("auto_pad", "NOTSET") == "SAME_UPPER"
            begin.append(total // 2 if upper else total - total // 2)
    # y[o] gathers x[i]·W[t] where o = i·s − pb + t·d, so the adjoint is a strided Conv of R
    # with the same W; its end pad reaches every x[i], and the crop drops what lies past X
    ends = [max(s[i] * (xs[2 + i] - 1) + d[i] * (k[i] - 1) + 1 - begin[i] - ys[2 + i], 0) for i in range(r)]
    g = b.op(
        "Conv", [grads[0], b.fwd(w)], "convT_T", strides=list(s), dilations=list(d),
        group=int(a.get("group", 1)), pads=list(begin) + ends, kernel_shape=list(k),
    )
    g = b.op("Slice", [g, b.ints([0] * r), b.ints(list(xs[2:])), b.ints(list(range(2, 2 + r)))], "crop")
    return {x: g}
