"""Window geometry of Conv, ConvTranspose and pooling nodes, with auto_pad resolved."""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from cnncli.frontend.graph import Shape, attrs


@dataclass(frozen=True)
class Window:
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    dilations: tuple[int, ...]
    group: int = 1
    ceil_mode: bool = False

    @property
    def pads(self) -> tuple[int, ...]:
        """ONNX order: all begins, then all ends."""
        return self.pads_begin + self.pads_end


def window(node: onnx.NodeProto, in_shape: Shape | None, kernel: tuple[int, ...] | None) -> Window | None:
    """Geometry of a sliding-window node over the spatial dims of ``in_shape``.

    ``kernel`` comes from the weight shape (convs) or ``kernel_shape`` (pools). auto_pad
    SAME_* pads are worked out from the input size as the ONNX spec does.
    """
    a = attrs(node)
    k = tuple(a.get("kernel_shape", kernel or ()))
    if not k:
        return None
    r = len(k)
    s = tuple(a.get("strides", [1] * r))
    d = tuple(a.get("dilations", [1] * r))
    pads = a.get("pads", [0] * (2 * r))
    auto = a.get("auto_pad", "NOTSET")
    begin, end = tuple(pads[:r]), tuple(pads[r:])
    _check_window(node, k, s, d, pads, int(a.get("group", 1)))
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        if in_shape is None or any(x is None for x in in_shape[-r:]):
            return None
        begin, end = [], []
        for i in range(r):
            size = in_shape[-r + i]
            if node.op_type == "ConvTranspose":
                total = max(0, s[i] * (size - 1) + a.get("output_padding", [0] * r)[i] + (k[i] - 1) * d[i] + 1 - size * s[i])
            else:
                out = -(-size // s[i])
                total = max(0, (out - 1) * s[i] + (k[i] - 1) * d[i] + 1 - size)
            small, big = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else big)
            end.append(big if auto == "SAME_UPPER" else small)
        begin, end = tuple(begin), tuple(end)
    elif auto == "VALID":
        begin, end = (0,) * r, (0,) * r
    return Window(k, s, begin, end, d, int(a.get("group", 1)), bool(a.get("ceil_mode", 0)))


def _check_window(node: onnx.NodeProto, k, s, d, pads, group: int) -> None:
    """Window attributes no runtime takes (a stride or dilation of 0 divides by zero in SAME
    padding): the model is damaged."""
    if min(k, default=1) >= 1 and min(s, default=1) >= 1 and min(d, default=1) >= 1 and min(pads, default=0) >= 0 \
            and group >= 1:  # the common case, without a generator per attribute
        return
    for what, values, least in (("kernel", k, 1), ("strides", s, 1), ("dilations", d, 1), ("pads", pads, 0),
                                ("group", (group,), 1)):
        if any(v < least for v in values):
            from cnncli.frontend.parsed import damaged

            raise damaged(f"node '{node.name or (node.output or [node.op_type])[0]}' ({node.op_type}) has {what} "
                          f"{list(values) if len(values) > 1 or what != 'group' else values[0]} "
                          f"(at least {least} expected)")
