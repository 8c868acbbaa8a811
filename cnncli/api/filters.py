"""`cnn filters` / ``cnncli.filters(model, layer=1)``: a conv layer's kernels as a montage (the
first layer in colour, as in Zeiler & Fergus Fig. 6; deeper layers as each filter's strongest
input-channel slice in grey)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnncli.api.options import Options, integer, opt, path
from cnncli.api.result import Hear, Result, Warnings
from cnncli.columns import col
from cnncli.errors import CnnError


@dataclass(frozen=True)
class FilterRow:
    channel: int = col("filter", "int")
    norm: float = col("L2 norm")
    shown_input: int | None = col("input channel shown", "int")  # None: all channels shown in RGB


def weight_values(model, graph, name: str) -> np.ndarray:
    """A weight's values: stored, or computed by its constant subgraph (run on onnxruntime)."""
    import numpy as np

    from cnncli.engine.project import ConstValues, forward_model
    from cnncli.runtime.sessions import make_session

    value = ConstValues(model).get(name)
    if value is not None:
        return np.asarray(value)
    session = make_session(forward_model(model, [name], {}, graph.types).SerializeToString(), "cpu")
    return session.run([name], {})[0]


def conv_weights(model, graph, conv) -> np.ndarray:
    """A numbered conv's weights as numbers: a Conv's as stored; a quantized conv's dequantized,
    (w − zero point)·scale, per output channel where the zero point or scale is (QLinearConv's
    own inputs; ConvInteger's zero point, and the weight scale onnxruntime's dynamic
    quantization multiplies its output by; without it, the integers less their zero point)."""
    import numpy as np

    from cnncli.frontend.layers import weight_input

    w = weight_values(model, graph, weight_input(conv))
    if conv.op_type == "Conv":
        return w

    def per_channel(name):
        if not name:
            return None
        v = np.asarray(weight_values(model, graph, name), dtype=np.float64)
        return v.reshape(-1, *([1] * (w.ndim - 1))) if v.size > 1 else v.reshape(())

    slot = (lambda k: conv.input[k] if len(conv.input) > k else None)  # noqa: E731
    zp_name, scale_name = ((slot(3), _integer_conv_weight_scale(graph, conv)) if conv.op_type == "ConvInteger"
                           else (slot(5), slot(4)))
    out = w.astype(np.float64)
    zp, scale = per_channel(zp_name), per_channel(scale_name)
    if zp is not None:
        out = out - zp
    if scale is not None:
        out = out * scale
    return out.astype(np.float32)


def _integer_conv_weight_scale(graph, conv) -> str | None:
    """The weight scale of a ConvInteger, which onnxruntime's dynamic quantization applies after
    it: Cast → Mul by (input scale × weight scale), the weight scale a stored constant."""
    from cnncli.engine.targets import consumers_of

    readers = consumers_of(graph)
    casts = readers.get(conv.output[0], [])
    if len(casts) != 1 or casts[0].op_type != "Cast":
        return None
    muls = [n for n in readers.get(casts[0].output[0], []) if n.op_type == "Mul"]
    other = next((i for i in muls[0].input if i != casts[0].output[0]), None) if len(muls) == 1 else None
    scales = next((n for n in graph.nodes if other in n.output), None) if other else None
    if scales is None or scales.op_type != "Mul":
        return None
    return next((i for i in scales.input if i in graph.consts), None)


def filter_tiles(w: np.ndarray, rgb: bool) -> tuple[list[np.ndarray], list[FilterRow], float]:
    """w [Cout, Cin, kh, kw] → one uint8 tile per filter on one shared symmetric scale: 0 at
    mid-grey, the largest magnitude shown of any filter white (or black), so that tiles compare
    (a weak filter is pale); with the scale's peak.

    ``rgb`` (the first layer, 3 input channels): each filter in colour; otherwise its strongest
    input-channel slice in grey."""
    import numpy as np

    shown_slices, rows = [], []
    for c, f in enumerate(w.astype(np.float64)):
        norm = float(np.sqrt((f**2).sum()))
        if rgb:
            img, shown = f.transpose(1, 2, 0), None
        else:
            shown = int(np.argmax((f**2).reshape(f.shape[0], -1).sum(axis=1)))
            img = f[shown]
        shown_slices.append(np.nan_to_num(img, nan=0.0, posinf=0.0, neginf=0.0))
        rows.append(FilterRow(c, norm, shown))
    peak = max((float(np.abs(s).max()) for s in shown_slices if s.size), default=0.0)
    tiles = [np.round((0.5 + 0.5 * s / peak if peak > 0 else np.full_like(s, 0.5)) * 255).astype(np.uint8)
             for s in shown_slices]
    return tiles, rows, peak


FILTER_GAP = 6  # white pixels between filters: a mid-grey kernel stands apart from its neighbours


@dataclass(frozen=True, kw_only=True)
class FiltersOptions(Options):
    layer: int = opt(None, "--layer", integer())
    out: str | None = opt(None, "--out", path(), cli_default="cnn-out")  # None: write nothing


@dataclass(eq=False)
class Filters(Result):
    """A conv layer's kernels: ``weights`` [Cout, Cin, kh, kw], one FilterRow per filter in
    ``rows``, the montage as a uint8 picture (``montage``), ``meta`` (model, layer, node,
    weight_shape, rgb, montage: its path when written), ``files`` and ``warnings``."""

    meta: dict[str, Any]
    rows: list[FilterRow]
    weights: Any
    montage: Any
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def document(self):
        from cnncli.render import Document

        m = self.meta
        title = f"{m['model']} · layer {m['layer']} kernels {'x'.join(map(str, m['weight_shape']))}"
        return Document(rows=self.rows, row_type=FilterRow, rows_key="filters", meta=m, title=title,
                        files={"montage": m["montage"]})


def run(model: Any, options: FiltersOptions, *, on_warning: Hear | None = None) -> Filters:
    """The kernels of layer ``options.layer`` of ``model``; the montage PNG goes under ``out``."""
    import numpy as np

    from cnncli.api.sources import load, model_identity
    from cnncli.atomic import check_writable_dir, ensure_dir
    from cnncli.engine.targets import by_layer, conv_nodes
    from cnncli.frontend.damage import damage_explained
    from cnncli.frontend.graph import analyse
    from cnncli.frontend.load import load_external_weights
    from cnncli.imaging.naming import identified, stem_of
    from cnncli.imaging.montage import labelled_grid, scale_note, square_cols
    from cnncli.imaging.pictures import save_png

    o = options
    warnings = Warnings(on_warning)
    with damage_explained(), warnings.capturing():
        if o.out is not None:
            check_writable_dir(Path(o.out))
        loaded = load(model)
        load_external_weights(loaded)
        graph = analyse(loaded.model)
        by_layer(graph, o.layer)  # range check with the usual message
        conv = conv_nodes(graph)[o.layer - 1]
        w = conv_weights(loaded.model, graph, conv)
        if w.ndim != 4:
            raise CnnError(f"layer {o.layer} is a {w.ndim - 2}-D convolution; only 2-D kernels can be drawn")
        rgb = o.layer == 1 and w.shape[1] == 3  # a deeper conv reading 3 channels is not looking at colours
        tiles, rows, peak = filter_tiles(w, rgb)
        tile = int(max(40, min(64, 8 * max(w.shape[2:]))))
        montage = labelled_grid(tiles, [f"{r.channel}" for r in rows], square_cols(len(tiles)), tile, gap=FILTER_GAP)
        montage = scale_note(montage, f"one scale for all: mid-grey 0, white +{peak:.3g}, black -{peak:.3g}")
        written = None
        if o.out is not None:
            name = f"{identified(stem_of(loaded.name, 'model'), model_identity(model, loaded))}_layer{o.layer}_filters.png"
            written = str(save_png(montage, ensure_dir(Path(o.out)) / name))
    meta = {"model": loaded.name, "layer": o.layer, "node": conv.name or conv.output[0],
            "weight_shape": list(w.shape), "rgb": rgb, "montage": written}
    return Filters(meta, rows, w, montage, list(warnings), [written] if written else [])


def filters(model: Any, **options: Any) -> Filters:
    """A conv layer's kernels (``layer``, numbered as ``cnn stats`` numbers them); the montage PNG
    is written only when ``out`` names a folder."""
    return run(model, FiltersOptions.from_kwargs(options))
