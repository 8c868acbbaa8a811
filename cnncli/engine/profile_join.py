"""Join the kernels onnxruntime ran (the nodes of its optimised graph) to the nodes of the original
model, fused ones included.

onnxruntime's optimiser fuses nodes (Conv+BatchNormalization folded into the Conv, Conv+Relu into
one FusedConv, at level ``all`` on x86 Conv+Add+Relu into one NCHWc Conv with ReorderInput and
ReorderOutput kernels around it), removes some (Identity, Dropout) and renames tensors. The join
works on tensors, not names, wherever it can:

1. every tensor of the optimised graph that the original graph also has is that tensor;
2. layout kernels (ReorderInput, ReorderOutput, Transposes onnxruntime inserted) hand their
   tensor's identity on, both ways: an NCHWc block that ends in a ReorderOutput writing ``y``
   computes ``y``;
3. a kernel output still unknown takes the identity its kernel's name gives: onnxruntime names an
   NCHWc conv ``<original output>_nchwc``, and a fused node that keeps an original node's name
   computes that node's output.

A kernel then covers the original nodes between its inputs and its outputs: walking back from
what it computes, every producer up to its inputs (or a constant, or a node another kernel
computes). Its time goes to the first node it covers (graph order); the other covered nodes are
``fused`` into that one. A kernel that covers nothing (a ReorderInput, a memory copy between
devices) adds its time to the node of the nearest kernel after it (else before it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import onnx

LAYOUT_OPS = frozenset({"ReorderInput", "ReorderOutput", "Transpose", "MemcpyToHost", "MemcpyFromHost"})
_NAME_SUFFIXES = ("_nchwc",)
SUMS = frozenset({"Add", "Sum"})
# the activations onnxruntime fuses into a conv (its FusedConv and NCHWc Conv ``activation``)
ACTIVATIONS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish"})


@dataclass
class Join:
    home: dict[str, int] = field(default_factory=dict)  # kernel name -> original node index holding its time
    covered: dict[str, list[int]] = field(default_factory=dict)  # kernel name -> original nodes it computes
    fused_into: dict[int, int] = field(default_factory=dict)  # original node -> the node whose kernel computes it
    unjoined: list[str] = field(default_factory=list)  # kernels joined to no original node
    nested: list[str] = field(default_factory=list)  # kernels of If/Loop/Scan bodies: inside their node's time


def join_kernels(nodes: list[onnx.NodeProto], names: list[str], constants: set[str], optimized: onnx.GraphProto,
                 kernels: list[str]) -> Join:
    """Join ``kernels`` (names of nodes of ``optimized``) to indexes of ``nodes`` (the original
    graph's), which the session was given named ``names``; ``constants``: tensors whose values
    are fixed (weights, folded shapes), where no walk goes."""
    producer: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            if o:
                producer.setdefault(o, i)
    original_names = {name: i for i, name in enumerate(names) if name}
    known = set(producer) | {t for n in nodes for t in n.input if t}
    g1 = {n.name: n for n in optimized.node}
    g1_producer = {o: n.name for n in optimized.node for o in n.output if o}
    g1_consumers: dict[str, list[str]] = {}
    for n in optimized.node:
        for t in n.input:
            if t:
                g1_consumers.setdefault(t, []).append(n.name)
    g1_consts = {t.name for t in optimized.initializer}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for t in dict.fromkeys(n.input):
            if t:
                consumers.setdefault(t, []).append(i)
    same = _identities(optimized, known, producer, consumers, original_names, nodes)

    join = Join()
    computed: dict[int, str] = {}  # original node -> the kernel that writes its output
    for name in kernels:
        node = g1.get(name)
        if node is None:
            continue
        ins = {same[t] for t in node.input if t in same}
        for t in node.output:
            if t in same and same[t] not in ins and same[t] in producer:
                computed.setdefault(producer[same[t]], name)
    for name in kernels:
        node = g1.get(name)
        if node is None:  # a body's kernel (its time is inside its If/Loop/Scan's) or, with no graph read, unknown
            (join.nested if g1 else join.unjoined).append(name)
            continue
        stop = {same[t] for t in node.input if t in same} | constants
        start = [same[t] for t in node.output if t in same]
        seen: set[int] = set()
        todo = deque(t for t in start if t not in stop)
        while todo:
            t = todo.popleft()
            i = producer.get(t)
            if i is None or i in seen or computed.get(i, name) != name:
                continue
            seen.add(i)
            todo.extend(x for x in nodes[i].input if x and x not in stop and x not in g1_consts)
        join.covered[name] = sorted(seen)
        if seen:
            first = min(seen)
            join.home[name] = first
            for i in seen:
                if i != first:
                    join.fused_into.setdefault(i, first)
    for name in kernels:  # kernels that compute no original node: to their neighbours
        if name in join.home or name not in g1:
            continue
        near = _nearest(name, g1, g1_producer, g1_consumers, join.home)
        if near is None:
            join.unjoined.append(name)
        else:
            join.home[name] = near
    return join


def _identities(optimized: onnx.GraphProto, known: set[str], producer: dict[str, int], consumers: dict[str, list[int]],
                original_names: dict[str, int], nodes: list[onnx.NodeProto]) -> dict[str, str]:
    """Optimised-graph tensor -> the original tensor it holds (steps 1 to 3 of the module's doc)."""
    same = {t: t for n in optimized.node for t in (*n.input, *n.output) if t in known}
    same.update({i.name: i.name for i in optimized.input if i.name in known})
    layout = [n for n in optimized.node if n.op_type in LAYOUT_OPS and n.name not in original_names
              and n.input and n.output]

    def spread() -> None:
        changed = True
        while changed:
            changed = False
            for n in layout:
                a, b = n.input[0], n.output[0]
                if b in same and a not in same:
                    same[a] = same[b]
                    changed = True
                elif a in same and b not in same:
                    same[b] = same[a]
                    changed = True

    spread()
    for n in optimized.node:
        if not n.output or n.output[0] in same or n.op_type in LAYOUT_OPS:
            continue
        base = n.name
        for suffix in _NAME_SUFFIXES:
            if base.endswith(suffix):
                base = base[: -len(suffix)]
        if base in producer:
            same[n.output[0]] = _fused_tail(n, base, producer, consumers, nodes)
        elif n.name in original_names and nodes[original_names[n.name]].output:
            same[n.output[0]] = nodes[original_names[n.name]].output[0]
    spread()
    return same


def _fused_tail(node: onnx.NodeProto, tensor: str, producer: dict[str, int], consumers: dict[str, list[int]],
                nodes: list[onnx.NodeProto]) -> str:
    """What a fused conv named after its conv's output ``tensor`` computes: that output, then the
    Add of its Sum/Z input (a fourth input) and its activation (an ``activation`` attribute), each
    the one consumer of the tensor before it."""
    steps = []
    if len(node.input) > 3 and node.input[3]:
        steps.append(SUMS)
    if any(a.name == "activation" for a in node.attribute):
        steps.append(ACTIVATIONS)
    for ops in steps:
        after = consumers.get(tensor, [])
        if len(after) != 1 or nodes[after[0]].op_type not in ops or not nodes[after[0]].output:
            break
        tensor = nodes[after[0]].output[0]
    return tensor


def _nearest(name: str, g1: dict, g1_producer: dict, g1_consumers: dict, home: dict[str, int]) -> int | None:
    """The original node of the nearest joined kernel after ``name`` in the optimised graph, else
    before it (breadth first)."""
    for forward in (True, False):
        seen, todo = {name}, deque([name])
        while todo:
            k = todo.popleft()
            if k != name and k in home:
                return home[k]
            node = g1[k]
            nexts = ([c for t in node.output for c in g1_consumers.get(t, ())] if forward
                     else [g1_producer[t] for t in node.input if t in g1_producer])
            for n in nexts:
                if n not in seen and n in g1:
                    seen.add(n)
                    todo.append(n)
    return None
