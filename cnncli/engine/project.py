"""The projection engine: one forward run with the extra outputs the reverse pass needs, then one
batched run of the generated reverse graph (see cnncli/reverse/), both on onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

from cnncli.errors import BadArgument, CnnError
from cnncli.frontend.graph import Graph
from cnncli.reverse import OUTPUT, SEED, ReverseGraph, bake_constants, build_reverse, dynamic_tensors, other_input
from cnncli.runtime.sessions import as_float32, float32_view, make_session, ort_message

KEEP = ("map", "max")


class ConstValues:
    """Values of constant tensors (initializers, Constant nodes), looked up on demand."""

    def __init__(self, model: onnx.ModelProto):
        self._inits = {t.name: t for t in model.graph.initializer}
        self._nodes = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant" and n.output}

    def is_initializer(self, name: str) -> bool:
        return name in self._inits

    def get(self, name: str, default=None):
        if name in self._inits:
            return numpy_helper.to_array(self._inits[name])
        node = self._nodes.get(name)
        if node is not None:
            try:
                return numpy_helper.to_array(node.attribute[0].t) if node.attribute[0].name == "value" else np.asarray(
                    helper.get_attribute_value(node.attribute[0])
                )
            except Exception:
                return default
        return default


@dataclass
class ChannelResult:
    channel: int
    max_activation: float
    location: list[int] | None  # [y, x] of the strongest activation (4-D targets), else None
    projection: np.ndarray  # float32, shaped like one model input: [C, H, W]


def forward_model(model: onnx.ModelProto, outputs: list[str], extra: dict[str, tuple[str, int]], types: dict) -> onnx.ModelProto:
    """The model cut down to what produces ``outputs``, with MaxPool switch outputs added."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    by_key = {}
    for n in m.graph.node:
        by_key[n.name or n.output[0]] = n
    for name, (key, slot) in extra.items():
        node = by_key[key]
        while len(node.output) <= slot:
            node.output.append("")
        node.output[slot] = name
    wanted, keep = set(outputs), []
    for n in reversed(m.graph.node):
        if any(o in wanted for o in n.output if o):
            keep.append(n)
            wanted.update(i for i in n.input if i)
    del m.graph.node[:]
    m.graph.node.extend(reversed(keep))
    inits = [t for t in m.graph.initializer if t.name in wanted]
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)
    inputs = [i for i in m.graph.input if i.name in wanted]  # IR 3 lists initializers as inputs too
    del m.graph.input[:]
    m.graph.input.extend(inputs)
    del m.graph.output[:]
    for name in outputs:
        m.graph.output.append(helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None))
    del m.graph.value_info[:]
    return m


def prefetched(fn, items: list) -> Iterator:
    """``fn(item)`` for each item in order, the next one computed in a worker thread while the
    caller uses the current result (at most two results exist at once)."""
    if len(items) <= 1:
        yield from (fn(item) for item in items)
        return
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1, thread_name_prefix="cnncli-prefetch")
    try:
        future = pool.submit(fn, items[0])
        for item in items[1:]:
            result = future.result()
            future = pool.submit(fn, item)
            yield result
            del result
        yield future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class Projector:
    """Project feature maps of ``target`` back to the input ``input_name`` of a loaded model.

    The model must carry its weights (external data loaded). ``graph`` is its analysis at batch 1.
    """

    def __init__(self, model: onnx.ModelProto, graph: Graph, input_name: str, target: str, mode: str,
                 provider: str = "cpu", verbose: bool = False, max_batch: int = 64, stop_at: str | None = None):
        """``stop_at``: a tensor between the input and ``target``; the reverse run then returns
        the signal there (in backprop mode the gradient of the seeded score: Grad-CAM's), and
        :meth:`forward` fetches that tensor too."""
        self.graph, self.input_name, self.target, self.mode = graph, input_name, target, mode
        self.provider, self.verbose, self.max_batch = provider, verbose, max_batch
        other = other_input(graph, input_name, target)
        if other is not None:
            raise CnnError(f"'{target}' also depends on input '{other}', which cnn project cannot feed; "
                           "choose a target that depends on one input only")
        consts = ConstValues(model)
        # the reverse pass runs in float32 whatever the model's float type (float16 weights too)
        self.reverse: ReverseGraph = build_reverse(float32_view(graph), target, mode, input_name, const_values=consts,
                                                     stop_at=stop_at)
        if self.reverse.one_row:  # (a recurrent layer's sequence axis is first: one seed row per run)
            self.max_batch = 1
        dynamic = dynamic_tensors(graph, input_name)
        self._baked_from_model = {n: as_float32(consts.get(n)) for n in self.reverse.needed
                                  if n not in dynamic and consts.is_initializer(n)}
        types = dict(graph.types)
        for name in self.reverse.extra_outputs:
            types[name] = onnx.TensorProto.INT64
        first = [target] + ([stop_at] if stop_at and stop_at != target else [])
        self._fetch = first + [n for n in self.reverse.needed if n not in first and n not in self._baked_from_model]
        fwd = forward_model(model, self._fetch, self.reverse.extra_outputs, types)
        self._dynamic_needed = [n for n in self.reverse.needed if n in dynamic or n in self.reverse.extra_outputs]
        self._fwd_session = make_session(fwd.SerializeToString(), provider, verbose, spin=False)
        self._rev_session = None
        self._baked_model: onnx.ModelProto | None = None
        self.last_forward: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ runs
    def forward(self, x: np.ndarray) -> dict[str, np.ndarray]:
        try:
            values = self._fwd_session.run(self._fetch, {self.input_name: x})
        except Exception as exc:
            raise CnnError(f"the forward run failed: {ort_message(exc)}") from None
        return dict(zip(self._fetch, values))

    def reverse_model(self, fwd: dict[str, np.ndarray]) -> onnx.ModelProto:
        """The reverse graph with the weights baked in as initializers (built once)."""
        if self._baked_model is None:
            values = dict(self._baked_from_model)
            values.update({n: fwd[n] for n in self.reverse.needed if n not in self._dynamic_needed and n in fwd})
            self._baked_model = bake_constants(self.reverse, values)
        return self._baked_model

    def run_reverse(self, seeds: np.ndarray, fwd: dict[str, np.ndarray], paired: bool = False) -> np.ndarray:
        """Run the reverse graph on seed rows, ``max_batch`` rows at a time.

        The forward values either belong to one image shared by every row, or (``paired``)
        to one image per row, in which case they are cut into the same chunks as the seeds.
        """
        if self._rev_session is None:
            self._rev_session = make_session(self.reverse_model(fwd).SerializeToString(), self.provider, self.verbose, spin=False)
        out = []
        for start in range(0, len(seeds), self.max_batch):
            stop = start + self.max_batch
            # (a 0-d value, such as a dynamic quantization's scale, is the run's own: shared by every row)
            feeds = {n: (fwd[n][start:stop] if paired and np.ndim(fwd[n]) else fwd[n]) for n in self._dynamic_needed}
            feeds[SEED] = np.ascontiguousarray(seeds[start:stop], dtype=np.float32)
            try:
                out.append(self._rev_session.run([OUTPUT], feeds)[0])
            except Exception as exc:
                raise CnnError(f"the reverse run failed: {ort_message(exc)}") from None
        return out[0] if len(out) == 1 else np.concatenate(out, axis=0)

    # ------------------------------------------------------------------ seeds
    def seeds(self, act: np.ndarray, channels: list[int], keep: str) -> tuple[np.ndarray, list[tuple[float, list[int] | None]]]:
        """One seed row per channel: the kept activations' own values, everything else zero.

        ``act`` is the target activation of one image ([1, C, ...]). keep='map' keeps the
        channel's whole map; keep='max' only its strongest activation.
        """
        seeds = np.zeros((len(channels), *act.shape[1:]), dtype=np.float32)
        info = []
        for row, c in enumerate(channels):
            plane = act[0, c]
            flat = int(np.argmax(plane))
            loc = [int(v) for v in np.unravel_index(flat, plane.shape)] if plane.ndim else None
            info.append((float(plane.max()), loc))
            if keep == "map" or plane.ndim == 0:  # a 2-D target's channel is one unit
                seeds[row, c] = plane
            else:  # (seeds[row, c].flat[...] = ... would write into a temporary on 2-D targets)
                seeds[(row, c, *np.unravel_index(flat, plane.shape))] = plane.flat[flat]
        return seeds, info

    def choose(self, act: np.ndarray, channels: list[int] | str, top: int | None = None) -> list[int]:
        """The channel list: as given, or (``channels == "top"``) the ``top`` strongest on this image."""
        if channels == "top":
            strength = act[0].reshape(act.shape[1], -1).max(axis=1)
            return [int(c) for c in np.argsort(-strength, kind="stable")[:top]]
        return list(channels)

    def iter_project(self, x: np.ndarray, channels: list[int] | str, keep: str = "map",
                     top: int | None = None) -> Iterator[ChannelResult]:
        """Project ``channels`` of one image, ``max_batch`` at a time, one result after another.

        Seeds and projections exist for two chunks of channels at a time (the next chunk's
        reverse run goes on in a worker thread, onnxruntime releasing the GIL, while the caller
        writes this chunk's files): memory does not grow with the number of channels."""
        if keep not in KEEP:
            raise BadArgument("--keep", f"'{keep}' is not one of {', '.join(KEEP)}")
        fwd = self.last_forward = self.forward(x)
        act = fwd[self.target]
        channels = self.choose(act, channels, top)
        chunks = [channels[i:i + self.max_batch] for i in range(0, len(channels), self.max_batch)]

        def run(chunk):
            seeds, info = self.seeds(act, chunk, keep)
            return chunk, self.run_reverse(seeds, fwd), info

        for chunk, proj, info in prefetched(run, chunks):
            for j, (c, (m, loc)) in enumerate(zip(chunk, info)):
                yield ChannelResult(c, m, loc, proj[j])
            del proj

    def project(self, x: np.ndarray, channels: list[int] | str, keep: str = "map", top: int | None = None) -> list[ChannelResult]:
        return list(self.iter_project(x, channels, keep, top))

    def project_units(self, x: np.ndarray, units: list[tuple[int, tuple[int, ...]]]) -> np.ndarray:
        """Project single units, each on its own image: ``x`` holds one image per unit, and
        ``units[i] = (channel, value_index...)`` picks the unit (channel, y, x) of image i, seeded
        with its own activation. Returns [len(units), C, H, W]."""
        fwd = self.last_forward = self.forward(x)
        act = fwd[self.target]
        seeds = np.zeros((len(units), *act.shape[1:]), dtype=np.float32)
        for i, (c, pos) in enumerate(units):
            seeds[(i, c, *pos)] = act[(i, c, *pos)]
        return self.run_reverse(seeds, fwd, paired=True)
