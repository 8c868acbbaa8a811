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


def consumers_of(graph: Graph) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in graph.nodes:
        for i in n.input:
            if i:
                out.setdefault(i, []).append(n)
    return out


# activations of one input that end a conv block as a ReLU does (their own ONNX ops)
SMOOTH = frozenset({"Elu", "Selu", "Celu", "Gelu", "HardSwish", "Mish", "Softplus", "Tanh", "ThresholdedRelu"})
# the steps from x to the gate g of a gated activation x·g(x): SiLU's Sigmoid, hard swish's HardSigmoid,
# or hard swish as tf2onnx writes it, Add 3 → Clip 0..6 → Mul 1/6 (each with a constant)
GATE_STEPS = frozenset({"Sigmoid", "HardSigmoid", "Clip", "Relu", "Add", "Sub", "Mul", "Div", "Min", "Max"})


def _gated(graph: Graph, t: str, users: list, consumers: dict) -> str | None:
    """The output of a gated activation x·g(x) of ``t`` (SiLU, hard swish): ``t`` read by the
    final Mul and by the first of at most four elementwise steps to g, each the only reader of the
    one before and taking nothing else but constants. None when ``t``'s readers are not that."""
    if len(users) != 2:
        return None
    for m in users:
        other = users[1] if m is users[0] else users[0]
        if m.op_type != "Mul" or len(m.input) != 2 or t not in m.input or other is m:
            continue
        gate = m.input[1] if m.input[0] == t else m.input[0]
        n, prev = other, t
        for _ in range(4):
            if n.op_type not in GATE_STEPS or not n.input or n.input[0] != prev \
                    or any(i and i not in graph.consts for i in n.input[1:]):
                break
            if n.output[0] == gate:
                return m.output[0]
            nxt = consumers.get(n.output[0], [])
            if len(nxt) != 1:
                break
            n, prev = nxt[0], n.output[0]
    return None


def block_output(graph: Graph, conv) -> str:
    """Follow a single-consumer BatchNormalization, per-channel Add/Mul of a constant and one
    activation when they come next (the ReLU family, a smooth one such as Tanh or HardSwish, or
    a gated x·g(x) such as SiLU and hard swish written as ops): the conv block's output, what
    people mean by "layer N's feature maps". A quantized conv's integer output is followed to its
    float values first: ConvInteger's Cast and its Mul by the scales (computed at run time),
    QLinearConv's DequantizeLinear."""
    consumers = consumers_of(graph)
    graph_outputs = {o.name for o in graph.model.graph.output}
    t = conv.output[0]
    channels = (graph.shape(t) or (None, None))[1]
    seen_bn = False
    quantized = conv.op_type != "Conv"
    while True:
        users = consumers.get(t, [])
        if t in graph_outputs:
            return t
        if len(users) == 2:
            return _gated(graph, t, users, consumers) or t
        if len(users) != 1:
            return t
        n = users[0]
        if n.op_type == "BatchNormalization" and not seen_bn and n.input[0] == t:
            seen_bn = True
        elif quantized and n.op_type in ("Cast", "DequantizeLinear") and n.input[0] == t:
            pass
        elif n.op_type in ("Add", "Mul") and len(n.input) == 2:
            other = n.input[1] if n.input[0] == t else n.input[0]
            ref = graph.consts.get(other)
            shape = graph.shape(other) if ref is None and quantized else None  # a scale computed at run time
            size = ref.numel if ref is not None else (numel(shape) if shape is not None else None)
            if size not in (1, channels):
                return t
        elif (n.op_type in RELU_FAMILY or n.op_type in SMOOTH) and n.input[0] == t:
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
