"""`cnn features` / ``cnncli.features(model, image, layer=2)``: all of a layer's activation maps
for one image, strongest first, with per-channel statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnncli.api.options import ImageOptions, integer, opt, path
from cnncli.api.result import Hear, Result, Warnings
from cnncli.columns import col


@dataclass(frozen=True)
class FeatureRow:
    channel: int = col("channel", "int")
    max: float = col("max")
    mean: float = col("mean")
    zero_fraction: float = col("zeros")


def channel_stats(act: np.ndarray) -> list[FeatureRow]:
    """act [C, ...] → one row per channel, strongest (largest max) first."""
    import numpy as np

    flat = act.reshape(act.shape[0], -1).astype(np.float64)
    maxima, means, zeros = flat.max(axis=1), flat.mean(axis=1), (flat == 0).mean(axis=1)
    order = np.argsort(-maxima, kind="stable")
    return [FeatureRow(int(c), float(maxima[c]), float(means[c]), float(zeros[c])) for c in order]


MONTAGE_GAP = 4  # pixels between tiles, in the montage's dark grey (MONTAGE_BG)
MONTAGE_BG = 40


def tile_label(row: FeatureRow) -> str:
    """What the montage writes above a channel's tile: its number and largest activation, as
    the table lists them."""
    return f"c{row.channel} {row.max:.3g}"


def montage(act: np.ndarray, rows: list[FeatureRow], tile: int = 64, labels: bool = True) -> np.ndarray:
    """Each map scaled to its own range (0 black, its max white), in the order of ``rows``, under
    its label (``tile_label``: channel and max; none when ``labels`` is False)."""
    import numpy as np

    from cnncli.imaging.montage import labelled_grid, square_cols

    tiles = []
    for r in rows:
        a = act[r.channel].astype(np.float64)
        lo, hi = min(a.min(), 0.0), a.max()
        t = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo)
        tiles.append(np.round(t * 255).astype(np.uint8))
    return labelled_grid(tiles, [tile_label(r) for r in rows] if labels else None, square_cols(len(tiles)), tile,
                         gap=MONTAGE_GAP, bg=MONTAGE_BG)


@dataclass(frozen=True, kw_only=True)
class FeaturesOptions(ImageOptions):
    layer: int = opt(None, "--layer", integer())
    out: str | None = opt(None, "--out", path(), cli_default="cnn-out")  # None: write nothing


@dataclass(eq=False)
class Features(Result):
    """A layer's activation maps for one image: ``activations`` [C, H, W], one FeatureRow per
    channel (strongest first) in ``rows``, the ``montage`` (uint8), ``meta`` (model, image, layer,
    tensor, shape, montage: its path when written), ``files`` and ``warnings``."""

    meta: dict[str, Any]
    rows: list[FeatureRow]
    activations: Any
    montage: Any
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def document(self):
        from cnncli.render import Document

        m = self.meta
        title = f"{m['model']} · layer {m['layer']} ({m['tensor']}) on {m['image']}"
        return Document(rows=self.rows, row_type=FeatureRow, rows_key="channels", meta=m, title=title,
                        files={"montage": m["montage"]})


def run(model: Any, image: str, options: FeaturesOptions, *, on_warning: Hear | None = None) -> Features:
    """Layer ``options.layer``'s maps of ``model`` on ``image`` (a path); the montage under ``out``."""
    from cnncli.api.sources import image_identity, model_identity, open_with_image
    from cnncli.atomic import check_writable_dir, ensure_dir
    from cnncli.engine.model_input import check_feedable, check_run_memory, image_loader, model_preprocess
    from cnncli.engine.project import forward_model
    from cnncli.engine.targets import by_layer
    from cnncli.frontend.damage import damage_explained
    from cnncli.imaging.naming import identified, stem_of
    from cnncli.imaging.pictures import save_png
    from cnncli.runtime.sessions import make_session, resolve_provider

    o = options
    image = path(optional=False)("IMAGE", image)
    warnings = Warnings(on_warning)
    with damage_explained(), warnings.capturing():
        if o.out is not None:
            check_writable_dir(Path(o.out))
        provider = resolve_provider(o.provider)
        m, array = open_with_image(model, image, o.size, o.input_name)  # (array: a .npy used as it is)
        target = by_layer(m.graph, o.layer)
        check_feedable(m, target.tensor, "cnn features")
        check_run_memory(m, target.tensor, limit=o.max_memory)
        prep = model_preprocess(m, o.preset, o.mean, o.std, o.bgr)
        ids = (model_identity(model, m), image_identity(image), repr(prep.describe()), f"{m.shape[2]}x{m.shape[3]}")
        name = f"{stem_of(m.name, 'model')}_{identified(stem_of(image, 'image'), *ids)}_layer{o.layer}_features.png"
        x = array[1] if array is not None else image_loader(m, prep)(image)[1]
        session = make_session(forward_model(m.model, [target.tensor], {}, m.graph.types).SerializeToString(), provider,
                               o.verbose)
        act = session.run([target.tensor], {m.input_name: x})[0][0]
        rows = channel_stats(act)
        picture = montage(act, rows)
        written = str(save_png(picture, ensure_dir(Path(o.out)) / name)) if o.out is not None else None
    meta = {"model": m.name, "image": image, "layer": o.layer, "tensor": target.tensor,
            "shape": list(act.shape), "montage": written}
    return Features(meta, rows, act, picture, list(warnings), [written] if written else [])


def features(model: Any, image: str, **options: Any) -> Features:
    """All of a layer's activation maps for ``image`` (a path), strongest first; the options of
    ``cnn features``. The montage PNG is written only when ``out`` names a folder."""
    return run(model, image, FeaturesOptions.from_kwargs(options))
