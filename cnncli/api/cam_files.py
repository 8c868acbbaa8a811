"""The files of `cnn cam` (and of ``cnncli.cam(..., out=DIR)``): per map, the map upsampled to the
input in a colormap (PNG), the input | map | overlay figure (matplotlib, through Figure()), with
``--guided`` the guided Grad-CAM picture, and with ``--save-npy`` the raw map at the layer's own
resolution (float32 [h, w]). Every file is written atomically.

Names: ``<model>_<image>-<hash>_<layerN or tensor>_<method>[_guided]_c<class>[_<preprocessing>]``
plus ``.png``, ``_figure.png``, ``_guided.png``, ``.npy``; the hash covers the model and the image.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cnncli.api.cam import CamJob, CamMap

IMAGE_WEIGHT = 0.5  # the overlay: half input, half heat map (pytorch-grad-cam's show_cam_on_image)
# the jet colormap (pytorch-grad-cam's, OpenCV's COLORMAP_JET) as matplotlib defines it: (x, value)
# breakpoints per channel, linear between them (no matplotlib import for the PNGs alone)
JET = (((0, 0), (0.35, 0), (0.66, 1), (0.89, 1), (1, 0.5)),
       ((0, 0), (0.125, 0), (0.375, 1), (0.64, 1), (0.91, 0), (1, 0)),
       ((0, 0.5), (0.11, 1), (0.34, 1), (0.65, 0), (1, 0)))


def heat(upsampled: np.ndarray) -> np.ndarray:
    """A map in [0, 1] [H, W] as uint8 RGB [H, W, 3] in the jet colormap."""
    x = np.clip(np.nan_to_num(upsampled, nan=0.0), 0, 1)
    rgb = [np.interp(x, [p for p, _ in points], [v for _, v in points]) for points in JET]
    return np.round(np.stack(rgb, axis=-1) * 255).astype(np.uint8)


def overlaid(pixels: np.ndarray, hot: np.ndarray) -> np.ndarray:
    return np.round(IMAGE_WEIGHT * pixels.astype(np.float32) + (1 - IMAGE_WEIGHT) * hot).astype(np.uint8)


def guided_picture(item: "CamMap", bgr: bool = False) -> np.ndarray:
    from cnncli.imaging.pictures import to_display

    img = to_display(item.guided_cam(), "percentile", bgr)
    return img if img.ndim == 3 else np.repeat(img[:, :, None], 3, axis=2)


def figure(item: "CamMap", title: str, guided: np.ndarray | None = None) -> np.ndarray:
    """Input | map | overlay (| guided Grad-CAM) as uint8 RGB, drawn with matplotlib's Figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cnncli.escaping import visible

    pixels = item.pixels
    hot = heat(item.upsampled())
    panels = [("input", pixels), ("map", hot), ("overlay", overlaid(pixels, hot))]
    if guided is not None:
        panels.append(("guided Grad-CAM", guided))
    fig = Figure(figsize=(2.6 * len(panels), 3.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(visible(title), fontsize=9, parse_math=False)  # (file and class names: no raw controls, no mathtext)
    for ax, (name, img) in zip(fig.subplots(1, len(panels)), panels):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()


class CamWriter:
    """Writes each map of a job under ``out``; the longest name is checked at construction."""

    def __init__(self, job: "CamJob", out: str | Path):
        from cnncli.atomic import check_writable_dir
        from cnncli.imaging.naming import identified, part, slug, stem_of

        self.job, self.out = job, Path(out)
        check_writable_dir(self.out)
        o, meta = job.options, job.meta
        tensor = meta["tensor"]
        where = f"layer{meta['layer']}" if meta["layer"] is not None else \
            part(tensor) if slug(tensor) == tensor else identified(part(tensor), tensor)
        score = "" if o.tensor is None and o.output is None else identified(part(job.engine.score.tensor), job.engine.score.tensor)
        self.model_stem = stem_of(job.images.model.name, "model")
        self.tail = "_".join(p for p in (where, o.method.replace("+", "p"), "guided" if o.guided else "", score) if p)
        self._made_dir = False
        self.name_of("x" * 48, ("",), 10 ** 6)

    def name_of(self, image: str, identity: tuple[str, ...], unit: int) -> str:
        from cnncli.imaging.naming import NAME_MAX, fits, identified, part, stem_of

        name = f"{self.model_stem}_{identified(stem_of(image, 'input'), *identity)}_{self.tail}_c{unit}"
        if not fits(name + "_figure.png"):
            name = part(name, limit=NAME_MAX - len("_figure.png"))
        return name

    def write(self, item: "CamMap", identity: tuple[str, ...]) -> dict[str, str]:
        from cnncli.atomic import ensure_dir
        from cnncli.imaging.pictures import save_npy, save_png

        if not self._made_dir:
            ensure_dir(self.out)
            self._made_dir = True
        o = self.job.options
        base = self.out / self.name_of(item.image, identity, item.unit)
        files = {"png": str(save_png(heat(item.upsampled()), f"{base}.png", compress_level=1))}
        guided = guided_picture(item, self.job.images.bgr) if item.guided is not None else None
        if o.figure:
            what = item.label if item.label is not None else f"{'class' if o.tensor is None else 'channel'} {item.unit}"
            title = f"{Path(item.image).name} · {self.tail} · {what} (y = {item.score:.4g})"
            files["figure"] = str(save_png(figure(item, title, guided), f"{base}_figure.png", compress_level=1))
        if guided is not None:
            files["guided"] = str(save_png(guided, f"{base}_guided.png", compress_level=1))
        if o.save_npy:
            files["npy"] = str(save_npy(np.ascontiguousarray(item.map, dtype=np.float32), f"{base}.npy"))
        return files
