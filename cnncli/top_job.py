"""`cnn top` as a library call: scan images, keep each channel's top k, project and crop them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cnncli.errors import BadArgument, CnnError
from cnncli.top import ChannelTopRow, TopEntry


@dataclass(frozen=True)
class TopRequest:
    model: str
    images: str  # folder, glob, text file of paths, or "-"
    layer: int
    channels: str | None = None  # "3,5,12"
    n_channels: str | None = None  # "16" or "all"
    seed: int = 0
    k: int = 9
    mode: str = "deconvnet"
    batch_size: int = 16
    preset: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    bgr: bool | None = None
    size: tuple[int, int] | None = None
    out_dir: str = "cnn-top"
    provider: str = "auto"
    input_name: str | None = None
    verbose: bool = False


@dataclass
class TopReport:
    meta: dict[str, Any]
    rows: list[ChannelTopRow]
    skipped: list[str]


def choose_channels(req: TopRequest, n: int) -> list[int]:
    from cnncli.targets import parse_channels

    if req.channels is not None:
        if req.n_channels is not None:
            raise BadArgument("--channels", "give --channel or --channels, not both")
        return parse_channels(req.channels, None, n)
    spec = (req.n_channels or "16").strip().lower()
    if spec == "all":
        return list(range(n))
    try:
        count = int(spec)
    except ValueError:
        raise BadArgument("--channels", f"'{spec}' is not a number or 'all'") from None
    if count < 1:
        raise BadArgument("--channels", "must be at least 1")
    if count >= n:
        return list(range(n))
    rng = np.random.default_rng(req.seed)
    return sorted(int(c) for c in rng.choice(n, size=count, replace=False))


def run_top(req: TopRequest, stdin=None, progress: Callable[[int], None] | None = None) -> TopReport:
    from cnncli.atomic import check_writable_dir
    from cnncli.image_sources import iter_image_paths
    from cnncli.images import grid, label_strip, save_png, side_by_side, to_display
    from cnncli.model_input import image_loader, open_for_images
    from cnncli.preprocess import display_pixels, make_preprocess
    from cnncli.project import Projector, forward_model
    from cnncli.project_job import _slug
    from cnncli.receptive import receptive_fields
    from cnncli.runtime import make_session, resolve_provider
    from cnncli.targets import by_layer
    from cnncli.top import scan

    if req.k < 1:
        raise BadArgument("-k", "must be at least 1")
    if req.model == "-" and req.images == "-":
        raise BadArgument("IMAGES", "the model is read from standard input: give the images as a folder, glob or list file")
    out = Path(req.out_dir)
    check_writable_dir(out)
    provider = resolve_provider(req.provider)
    m = open_for_images(req.model, req.size, req.input_name)
    target = by_layer(m.graph, req.layer)
    if len(target.shape) != 4:
        raise CnnError(f"layer {req.layer}'s output '{target.tensor}' is not a 4-D feature map")
    channels = choose_channels(req, target.shape[1])
    prep = make_preprocess(m.shape[1], req.preset or m.labels.get("cnncli.preprocess"), req.mean, req.std, req.bgr)
    load = image_loader(m, prep)
    batch = req.batch_size if m.batchable else 1

    fwd = forward_model(m.model, [target.tensor], {}, m.graph.types)
    session = make_session(fwd.SerializeToString(), provider, req.verbose)
    result = scan(session, m.input_name, target.tensor, iter_image_paths(req.images, stdin),
                  lambda p: load(p)[1], channels, req.k, batch, progress)
    if result.scanned == 0:
        raise CnnError(f"no readable images in '{req.images}'" + (f" ({len(result.skipped)} skipped)" if result.skipped else ""))

    rf = receptive_fields(m.graph).get(target.tensor)
    h, w = m.shape[2], m.shape[3]
    projector = Projector(m.model, m.graph, m.input_name, target.tensor, req.mode, provider, req.verbose, max_batch=batch)
    out.mkdir(parents=True, exist_ok=True)
    stem = _slug(Path(m.name).stem)  # '<stdin>' → 'stdin'
    tile = int(min(128, max(64, rf[0].size if rf else 64)))
    rows, overview_tiles = [], []
    for row_i, c in enumerate(channels):
        found = result.top.entries(row_i)
        entries, proj_tiles, patch_tiles = [], [], []
        for start in range(0, len(found), batch):
            chunk = found[start:start + batch]
            loaded = [load(path) for _, path, _ in chunk]
            x = np.concatenate([t for _, t in loaded], axis=0)
            proj = projector.project_units(x, [(c, tuple(loc)) for _, _, loc in chunk])
            for (value, path, loc), (raw, _), p in zip(chunk, loaded, proj):
                (y0, y1), (x0, x1) = (rf[0].box(loc[0], h), rf[1].box(loc[1], w)) if rf else ((0, h), (0, w))
                entries.append(TopEntry(path, value, loc, [y0, x0, y1, x1]))
                proj_tiles.append(to_display(p[:, y0:y1, x0:x1], "grey", prep.bgr))
                patch_tiles.append(display_pixels(raw)[y0:y1, x0:x1])
        cols = int(np.ceil(np.sqrt(req.k)))
        figure = label_strip(side_by_side(grid(proj_tiles, cols, tile), grid(patch_tiles, cols, tile)),
                             f"layer {req.layer} channel {c}: top {len(entries)} (projection | patch)")
        path = save_png(figure, out / f"{stem}_layer{req.layer}_c{c}_top{req.k}_{req.mode}.png")
        overview_tiles.append(figure)
        rows.append(ChannelTopRow(c, entries[0].activation if entries else None, entries, {"grid": str(path)}))
    per_row = max(1, min(4, int(np.ceil(np.sqrt(len(overview_tiles))))))
    width = max(t.shape[1] for t in overview_tiles)
    overview = save_png(grid(overview_tiles, per_row, width, gap=12), out / f"{stem}_layer{req.layer}_top{req.k}_overview.png")
    meta = {
        "model": m.name, "images": req.images, "scanned": result.scanned, "skipped": len(result.skipped),
        "layer": req.layer, "tensor": target.tensor, "mode": req.mode, "k": req.k,
        "receptive_field": [a.size for a in rf] if rf else None, "overview": str(overview),
        "preprocess": {**prep.describe(), "size": [h, w]},
    }
    return TopReport(meta, rows, result.skipped)
