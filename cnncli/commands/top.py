"""`cnn top` as a library call: scan images, keep each channel's top k, project and crop them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cnncli.engine.top import ChannelTopRow


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
    engine: str = "local"  # "local" or "ray" (cnncli.scale.ray_top)
    address: str | None = None  # ray: None starts a local runtime; "auto" or "ray://host:10001" joins one
    workers: int | None = None  # ray: actors, one onnxruntime session each [default: from the cluster]
    max_memory: int | None = None  # bytes: the limit of the run's estimated memory [default: what is available]


@dataclass
class TopReport:
    meta: dict[str, Any]
    rows: list[ChannelTopRow]
    skipped: list[str]


def run_top(req: TopRequest, stdin=None, progress: Callable[[int], None] | None = None) -> TopReport:
    """The Python API's top-k (cnncli.api.top) plus files: a grid PNG per channel, written as each
    channel is done, and an overview of all of them."""
    from cnncli.api.top import prepare
    from cnncli.atomic import check_writable_dir, ensure_dir
    from cnncli.imaging.pictures import grid, label_strip, save_png, side_by_side
    from cnncli.commands.naming import images_stem, stem_of

    out = Path(req.out_dir)
    check_writable_dir(out)
    job = prepare(req.model, req.images, req.layer, req.channels, req.n_channels, req.seed, req.k, req.mode,
                  req.batch_size, req.preset, req.mean, req.std, req.bgr, req.size, req.input_name, req.provider,
                  req.verbose, stdin, req.engine, req.address, req.workers, max_memory=req.max_memory)
    prefix = f"{stem_of(job.model.name, 'model')}_{images_stem(req.images)}_layer{req.layer}"
    result = job.scan(progress)
    tile = int(min(128, max(64, job.rf[0].size if job.rf else 64)))
    cols = int(np.ceil(np.sqrt(req.k)))
    rows, overview_tiles = [], []
    for ch in job.iter_channels(result):
        figure = label_strip(side_by_side(grid(ch.tiles("grey"), cols, tile), grid(ch.patches, cols, tile)),
                             f"layer {req.layer} channel {ch.channel}: top {len(ch.entries)} (projection | patch)")
        ensure_dir(out)
        path = save_png(figure, out / f"{prefix}_c{ch.channel}_top{req.k}_{req.mode}.png")
        overview_tiles.append(figure)
        rows.append(ChannelTopRow(ch.channel, ch.best, ch.entries, {"grid": str(path)}))
    per_row = max(1, min(4, int(np.ceil(np.sqrt(len(overview_tiles))))))
    width = max(t.shape[1] for t in overview_tiles)
    overview = save_png(grid(overview_tiles, per_row, width, gap=12), out / f"{prefix}_top{req.k}_overview.png")
    meta = {**job.meta, "images": req.images, "overview": str(overview)}
    order = ["model", "images", "scanned", "skipped", "layer", "tensor", "mode", "k", "receptive_field", "overview",
             "preprocess"]
    return TopReport({key: meta[key] for key in order}, rows, result.skipped)
