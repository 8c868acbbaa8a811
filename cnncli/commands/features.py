"""`cnn features`: all of a layer's activation maps for one image, strongest first, with per-channel
statistics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnncli.render import col


@dataclass(frozen=True)
class FeatureRow:
    channel: int = col("channel", "int")
    max: float = col("max")
    mean: float = col("mean")
    zero_fraction: float = col("zeros")


def channel_stats(act: np.ndarray) -> list[FeatureRow]:
    """act [C, ...] → one row per channel, strongest (largest max) first."""
    flat = act.reshape(act.shape[0], -1).astype(np.float64)
    maxima, means, zeros = flat.max(axis=1), flat.mean(axis=1), (flat == 0).mean(axis=1)
    order = np.argsort(-maxima, kind="stable")
    return [FeatureRow(int(c), float(maxima[c]), float(means[c]), float(zeros[c])) for c in order]


def montage(act: np.ndarray, rows: list[FeatureRow], tile: int = 64) -> np.ndarray:
    """Each map scaled to its own range (0 black, its max white), in the order of ``rows``."""
    from cnncli.imaging.pictures import grid

    tiles = []
    for r in rows:
        a = act[r.channel].astype(np.float64)
        lo, hi = min(a.min(), 0.0), a.max()
        t = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo)
        tiles.append(np.round(t * 255).astype(np.uint8))
    cols = int(np.ceil(np.sqrt(len(tiles))))
    return grid(tiles, cols, tile, gap=2, bg=40)


def run_features(model: str, image: str, layer: int, out_dir: str, size=None, preset=None, mean=None, std=None,
                 bgr=None, input_name=None, provider: str = "auto", verbose: bool = False,
                 max_memory: int | None = None) -> tuple[dict[str, Any], list[FeatureRow]]:
    from cnncli.atomic import check_writable_dir, ensure_dir
    from cnncli.imaging.pictures import save_png
    from cnncli.engine.model_input import check_feedable, check_run_memory, image_loader, open_for_images
    from cnncli.engine.model_input import model_preprocess
    from cnncli.commands.naming import stem_of
    from cnncli.engine.project import forward_model
    from cnncli.engine.runtime import make_session, resolve_provider
    from cnncli.engine.targets import by_layer

    out = Path(out_dir)
    check_writable_dir(out)
    provider = resolve_provider(provider)
    m = open_for_images(model, size, input_name)
    target = by_layer(m.graph, layer)
    check_feedable(m, target.tensor, "cnn features")
    check_run_memory(m, target.tensor, limit=max_memory)
    prep = model_preprocess(m, preset, mean, std, bgr)
    name = f"{stem_of(m.name, 'model')}_{stem_of(image, 'image')}_layer{layer}_features.png"  # fixed before the work
    _, x = image_loader(m, prep)(image)
    session = make_session(forward_model(m.model, [target.tensor], {}, m.graph.types).SerializeToString(), provider, verbose)
    act = session.run([target.tensor], {m.input_name: x})[0][0]
    rows = channel_stats(act)
    path = save_png(montage(act, rows), ensure_dir(out) / name)
    meta = {"model": m.name, "image": image, "layer": layer, "tensor": target.tensor,
            "shape": list(act.shape), "montage": str(path)}
    return meta, rows
