"""Which tensor a projection starts from: the N-th conv's block output, or any named tensor."""

from __future__ import annotations

from dataclasses import dataclass

from cnncli.errors import BadArgument
from cnncli.frontend.graph import Graph, numel
from cnncli.frontend.layers import numbered_nodes
from cnncli.reverse import RELU_FAMILY


@dataclass(frozen=True)
class Target:
    tensor: str
    layer: int | None  # conv number as `cnn stats` gives it, when chosen by --layer
    conv_node: str | None
    shape: tuple


def conv_nodes(graph: Graph) -> list:
    """The numbered layers' nodes (cnncli.frontend.layers): layer N is element N - 1."""
    return numbered_nodes(graph.nodes)


def _consumers(graph: Graph) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in graph.nodes:
        for i in n.input:
            if i:
                out.setdefault(i, []).append(n)
    return out


def block_output(graph: Graph, conv) -> str:
    """Follow a single-consumer BatchNormalization, per-channel Add/Mul of a constant and one
    ReLU-family activation when they come next: the conv block's output, what people mean by
    "layer N's feature maps"."""
    consumers = _consumers(graph)
    graph_outputs = {o.name for o in graph.model.graph.output}
    t = conv.output[0]
    channels = (graph.shape(t) or (None, None))[1]
    seen_bn = False
    while True:
        users = consumers.get(t, [])
        if len(users) != 1 or t in graph_outputs:
            return t
        n = users[0]
        if n.op_type == "BatchNormalization" and not seen_bn and n.input[0] == t:
            seen_bn = True
        elif n.op_type in ("Add", "Mul") and len(n.input) == 2:
            other = n.input[1] if n.input[0] == t else n.input[0]
            ref = graph.consts.get(other)
            if ref is None or ref.numel not in (1, channels):
                return t
        elif n.op_type in RELU_FAMILY and n.input[0] == t:
            return n.output[0]
        else:
            return t
        t = n.output[0]


def by_layer(graph: Graph, layer: int, alternative: str = "") -> Target:
    """``alternative``: what else the command takes when there is no conv (e.g. "use --tensor
    NAME"); only a command that has that option names it."""
    convs = conv_nodes(graph)
    if not convs:
        raise BadArgument("--layer", "the model has no Conv layers" + (f"; {alternative}" if alternative else ""))
    if not 1 <= layer <= len(convs):
        raise BadArgument("--layer", f"{layer} is out of range: the model has {len(convs)} Conv layers (1–{len(convs)})")
    conv = convs[layer - 1]
    t = block_output(graph, conv)
    return Target(t, layer, conv.name or conv.output[0], tuple(graph.shape(t) or ()))


def by_tensor(graph: Graph, name: str) -> Target:
    known = set(graph.shapes)
    if name not in known:
        raise BadArgument("--tensor", f"the model has no tensor '{name}'")
    shape = graph.shape(name)
    if shape is None or len(shape) not in (2, 4) or numel(shape) is None:
        raise BadArgument("--tensor", f"'{name}' has shape {shape}; a 4-D feature map or a 2-D tensor (logits) is needed")
    return Target(name, None, None, tuple(shape))


def parse_channels(text: str | None, top: int | None, n_channels: int) -> list[int] | str:
    """'12', '3,5,12', 'all' → list of indices; with --top K: the string 'top' (chosen after the forward run)."""
    if top is not None:
        if text is not None:
            raise BadArgument("--top", "give --channel or --top, not both")
        if not 1 <= top <= n_channels:
            raise BadArgument("--top", f"{top} is out of range: the target has {n_channels} channels")
        return "top"
    if text is None:
        raise BadArgument("--channel", "give --channel N[,N…] | all, or --top K")
    if text.strip().lower() == "all":
        return list(range(n_channels))
    try:
        chans = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise BadArgument("--channel", f"'{text}' is not a channel number, a comma-separated list or 'all'") from None
    if not chans:
        raise BadArgument("--channel", f"'{text}' names no channel; give N[,N…] or 'all'")
    bad = [c for c in chans if not 0 <= c < n_channels]
    if bad:
        raise BadArgument("--channel", f"{bad[0]} is out of range: the target has {n_channels} channels (0–{n_channels - 1})")
    return list(dict.fromkeys(chans))
