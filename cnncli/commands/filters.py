"""`cnn filters`: a conv layer's kernels as a montage (the first layer in colour, as in Zeiler &
Fergus Fig. 6; deeper layers as each filter's strongest input-channel slice in grey)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnncli.render import col


@dataclass(frozen=True)
class FilterRow:
    channel: int = col("filter", "int")
    norm: float = col("L2 norm")
    shown_input: int | None = col("input channel shown", "int")  # None: all channels shown in RGB


def weight_values(model, graph, name: str) -> np.ndarray:
    """A weight's values: stored, or computed by its constant subgraph (run on onnxruntime)."""
    from cnncli.engine.project import ConstValues, forward_model
    from cnncli.engine.runtime import make_session

    value = ConstValues(model).get(name)
    if value is not None:
        return np.asarray(value)
    session = make_session(forward_model(model, [name], {}, graph.types).SerializeToString(), "cpu")
    return session.run([name], {})[0]


def filter_tiles(w: np.ndarray, rgb: bool) -> tuple[list[np.ndarray], list[FilterRow]]:
    """w [Cout, Cin, kh, kw] → one uint8 tile per filter, 0 at mid-grey, each scaled by its own peak.

    ``rgb`` (the first layer, 3 input channels): each filter in colour; otherwise its strongest
    input-channel slice in grey."""
    tiles, rows = [], []
    for c, f in enumerate(w.astype(np.float64)):
        norm = float(np.sqrt((f**2).sum()))
        if rgb:
            img, shown = f.transpose(1, 2, 0), None
        else:
            shown = int(np.argmax((f**2).reshape(f.shape[0], -1).sum(axis=1)))
            img = f[shown]
        peak = np.abs(img).max()
        t = 0.5 + 0.5 * img / peak if peak > 0 else np.full_like(img, 0.5)
        tiles.append(np.round(t * 255).astype(np.uint8))
        rows.append(FilterRow(c, norm, shown))
    return tiles, rows


def run_filters(model: str, layer: int, out_dir: str) -> tuple[dict[str, Any], list[FilterRow]]:
    from cnncli.atomic import check_writable_dir, ensure_dir
    from cnncli.frontend.graph import analyse
    from cnncli.imaging.pictures import grid, save_png
    from cnncli.frontend.load import load_external_weights, load_model
    from cnncli.commands.naming import stem_of
    from cnncli.engine.targets import by_layer, conv_nodes

    out = Path(out_dir)
    check_writable_dir(out)
    loaded = load_model(model)
    load_external_weights(loaded)
    graph = analyse(loaded.model)
    by_layer(graph, layer)  # range check with the usual message
    conv = conv_nodes(graph)[layer - 1]
    w = weight_values(loaded.model, graph, conv.input[1])
    if w.ndim != 4:
        from cnncli.errors import CnnError

        raise CnnError(f"layer {layer} is a {w.ndim - 2}-D convolution; only 2-D kernels can be drawn")
    rgb = layer == 1 and w.shape[1] == 3  # a deeper conv reading 3 channels is not looking at colours
    tiles, rows = filter_tiles(w, rgb)
    tile = int(max(24, min(64, 8 * max(w.shape[2:]))))
    path = save_png(grid(tiles, int(np.ceil(np.sqrt(len(tiles)))), tile, gap=2, bg=255),
                    ensure_dir(out) / f"{stem_of(loaded.name, 'model')}_layer{layer}_filters.png")
    meta = {"model": loaded.name, "layer": layer, "node": conv.name or conv.output[0],
            "weight_shape": list(w.shape), "rgb": rgb, "montage": str(path)}
    return meta, rows
