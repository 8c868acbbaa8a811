"""`cnn dream` / ``cnncli.dream(model, layer=5, channels=[3, 7])``: what a unit wants to see —
feature visualisation by optimisation (Erhan et al. 2009; Olah et al. 2017) as Lucent's
``render_vis`` does it, on onnxruntime (cnncli.engine.dream): an FFT-parametrised,
colour-decorrelated image, Lucent's standard transforms, Adam, 512 steps.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cnncli.api.options import ImageOptions, channel_list, choice, dims, integer, opt, path, text
from cnncli.api.result import Hear, Result, Warnings
from cnncli.choices import DREAM_OBJECTIVES
from cnncli.columns import col
from cnncli.errors import BadArgument, CnnError


def positive_float(flag_: str, value: Any) -> float:
    """A finite number above 0 (not a bool, not text)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(float(value)) or value <= 0:
        raise BadArgument(flag_, f"{value!r} is not a number above 0")
    return float(value)


def image_size(flag_: str, value: Any) -> tuple[int, int] | None:
    """'128', 128, '96x128' or (96, 128) → (h, w)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value), int(value))
    size = dims((1, 2), "N or HxW")(flag_, value)
    if size is None:
        return None
    size = (size[0], size[0]) if len(size) == 1 else size
    if min(size) < 8 or max(size) > 4096:
        raise BadArgument(flag_, f"{'x'.join(map(str, size))}: each side from 8 to 4096 pixels")
    return size


@dataclass(frozen=True, kw_only=True)
class DreamOptions(ImageOptions):
    layer: int | None = opt(None, "--layer", integer(optional=True))
    tensor: str | None = opt(None, "--tensor", text())
    channels: str | None = opt(None, "--channel", channel_list)  # '3,5,12' or 'all' (an int or a list in Python)
    objective: str = opt("channel", "--objective", choice(DREAM_OBJECTIVES))
    steps: int = opt(512, "--steps", integer(1, maximum=1_000_000))
    size: tuple | None = opt(None, "--size", image_size)  # the optimised image; None: the model input's
    seed: int = opt(0, "--seed", integer(0, maximum=2**32 - 1))
    lr: float = opt(0.05, "--lr", positive_float)
    batch_size: int = opt(16, "--batch-size", integer(1))
    out: str | None = opt(None, "--out", path(), cli_default="cnn-out")  # None: write nothing

    def validate(self) -> None:
        if (self.layer is None) == (self.tensor is None):
            raise BadArgument("--layer", "give exactly one of --layer N or --tensor NAME")
        if self.objective == "layer" and self.channels is not None:
            raise BadArgument("--channel", "the layer objective (the mean of the squared layer) takes no channel")
        if self.objective != "layer" and self.channels is None:
            raise BadArgument("--channel", "give --channel N[,N…] | all (or --objective layer)")


@dataclass(frozen=True)
class DreamRow:
    channel: int | None = col("channel", "int")
    objective_start: float = col("objective start")
    objective_end: float = col("objective end")
    files: dict = col("files", "files")


@dataclass(eq=False)
class Dream(Result):
    """The optimised images: ``images`` float32 [N, C, h, w] in [0, 1] (RGB order), one DreamRow
    per channel in ``rows`` (the objective on the untransformed image, resized to the model
    input, before and after), ``history`` [steps, N] (the objective at each step, on that step's
    transformed image), ``meta``, ``files`` and ``warnings``.

    >>> d.to_image(0).save("c3.png")  # doctest: +SKIP
    """

    meta: dict[str, Any]
    rows: list[DreamRow]
    images: Any
    history: Any
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def to_uint8(self, which: int = 0):
        """Image ``which`` as uint8 [h, w, 3]."""
        from cnncli.engine.dream import to_pixels

        return to_pixels(self.images[which])

    def to_image(self, which: int = 0):
        from PIL import Image

        return Image.fromarray(self.to_uint8(which))

    def montage(self):
        """Every image side by side (rows of ⌈√N⌉), as a PIL image."""
        from PIL import Image

        from cnncli.engine.dream import montage

        return Image.fromarray(montage([self.to_uint8(i) for i in range(len(self.images))]))

    def document(self):
        from cnncli.render import Document

        m = self.meta
        title = (f"{m['model']} · {m['tensor']} · {m['objective']} · {m['steps']} steps, "
                 f"{'x'.join(map(str, m['size']))}, seed {m['seed']} on {m['provider']}")
        return Document(rows=self.rows, row_type=DreamRow, rows_key="results", meta=m, title=title)


def _open(model: Any, o: DreamOptions):
    """(LoadedModel, RunnableModel): the model's own input size, or ``--size`` where it is symbolic."""
    from cnncli.api.sources import load
    from cnncli.engine.model_input import open_for_images

    loaded = load(model)
    try:
        return loaded, open_for_images(loaded, None, o.input_name)
    except BadArgument as exc:
        if exc.param != "--size" or o.size is None:
            raise
        return loaded, open_for_images(loaded, o.size, o.input_name)


class DreamWriter:
    """Writes each image's PNG and the montage under ``out``, atomically. Names carry the model
    (its stem and a hash of which model), the target, the channel, the objective and a hash of
    the settings (steps, size, seed, lr, preprocessing), so runs with other settings do not
    overwrite each other and the same run writes the same names."""

    def __init__(self, out: str, identity: str, meta: dict[str, Any]):
        from cnncli.atomic import ensure_dir
        from cnncli.imaging.naming import identified, part, short_hash, stem_of

        self.out = ensure_dir(Path(out))
        target = f"layer{meta['layer']}" if meta["layer"] is not None else part(meta["tensor"])
        self.prefix = f"{identified(stem_of(meta['model'], 'model'), identity)}_{target}"
        settings = repr([meta[k] for k in ("tensor", "steps", "size", "seed", "lr", "preprocess")])
        self.objective, self.tag = meta["objective"], short_hash(settings)

    def write(self, channel: int | None, image) -> dict[str, str]:
        from cnncli.engine.dream import to_pixels
        from cnncli.imaging.pictures import save_png

        which = "" if channel is None else f"_c{channel}"
        path = self.out / f"{self.prefix}{which}_{self.objective}_dream-{self.tag}.png"
        return {"png": str(save_png(to_pixels(image), path))}

    def write_montage(self, channels: list, images) -> str:
        from cnncli.engine.dream import montage, to_pixels
        from cnncli.imaging.naming import short_hash
        from cnncli.imaging.pictures import save_png

        tag = short_hash(self.tag + repr(channels))
        path = self.out / f"{self.prefix}_{self.objective}_montage-{tag}.png"
        return str(save_png(montage([to_pixels(im) for im in images]), path))


def run(model: Any, options: DreamOptions, *, on_warning: Hear | None = None,
        progress: Callable[..., None] | None = None) -> Dream:
    """Optimise one image per channel of ``options.channels`` at layer ``options.layer`` (or
    ``tensor``); with ``out`` each image's PNG and the montage go there as they come.
    ``progress(n, total=...)`` is called once with n=0 and the number of steps in all, then with
    n=1 after each step."""
    import numpy as np

    from cnncli.api.sources import model_identity
    from cnncli.atomic import check_writable_dir
    from cnncli.engine.dream import Dreamer
    from cnncli.engine.memory import check_memory, run_estimate
    from cnncli.engine.model_input import check_feedable, model_preprocess
    from cnncli.engine.targets import by_layer, by_tensor, parse_channels
    from cnncli.frontend.damage import damage_explained
    from cnncli.runtime.sessions import resolve_provider

    o = options
    warnings = Warnings(on_warning)
    with damage_explained(), warnings.capturing():
        if o.out is not None:
            check_writable_dir(Path(o.out))
        provider = resolve_provider(o.provider)
        loaded, m = _open(model, o)
        target = by_layer(m.graph, o.layer, "use --tensor NAME") if o.layer is not None else by_tensor(m.graph, o.tensor)
        if len(target.shape) < 2 or target.shape[1] is None:
            raise CnnError(f"the shape of '{target.tensor}' is unknown (shape inference cannot follow the model there)")
        channels = [None] if o.objective == "layer" else parse_channels(o.channels, None, target.shape[1])
        check_feedable(m, target.tensor, "cnn dream")
        batch = o.batch_size if m.batchable else 1  # (a model whose batch is fixed at 1: one channel a run)
        rows_per_run = min(batch, len(channels))
        size = o.size or (m.shape[2], m.shape[3])
        # the optimised images too (measured: ~512 bytes a pixel each for their spectrum, Adam state and
        # transformed copies; the transforms' cached float64 per-axis matrices ~128 bytes per side²)
        images = rows_per_run * size[0] * size[1] * 512 + 128 * (size[0] ** 2 + size[1] ** 2)
        check_memory(run_estimate(m.graph, m.input_name, target.tensor, rows_per_run, rows_per_run) + images, o.max_memory,
                     f"this run ({rows_per_run} image(s) of {size[0]}x{size[1]} optimised, activations up to "
                     f"'{target.tensor}')", "a smaller --size or --batch-size")
        prep = model_preprocess(m, o.preset, o.mean, o.std, o.bgr)
        dreamer = Dreamer(m.model, m.graph, m.input_name, target.tensor, m.shape, prep, provider, o.verbose)
        meta = {"model": m.name, "tensor": target.tensor, "layer": target.layer, "objective": o.objective,
                "steps": o.steps, "size": list(size), "seed": o.seed, "lr": o.lr, "provider": provider,
                "preprocess": {**prep.describe(), "size": [m.shape[2], m.shape[3]]}, "montage": None}
        writer = DreamWriter(o.out, model_identity(model, loaded), meta) if o.out is not None else None
        chunks = [channels[i:i + batch] for i in range(0, len(channels), batch)]
        if progress:
            progress(0, total=o.steps * len(chunks))
        rows, images, history = [], [], []
        for chunk in chunks:
            d = dreamer.dream(chunk, o.objective, size, o.steps, o.lr, o.seed, progress)
            for i, c in enumerate(chunk):
                files = writer.write(c, d.images[i]) if writer else {}
                rows.append(DreamRow(c, float(d.start[i]), float(d.end[i]), files))
            images.append(d.images)
            history.append(d.history)
        images = np.concatenate(images)
        files = [f for r in rows for f in r.files.values()]
        if writer is not None:
            meta["montage"] = writer.write_montage(channels, images)
            files.append(meta["montage"])
    return Dream(meta, rows, images, np.concatenate(history, axis=1), list(warnings), files)


def dream(model: Any, **options: Any) -> Dream:
    """Feature visualisation: an image optimised to excite ``channels`` of ``layer`` (or of
    ``tensor``), as Lucent's render_vis makes it (FFT-parametrised, colour-decorrelated, with its
    standard transforms; Adam, ``lr`` 0.05, ``steps`` 512); ``objective`` 'channel' (the channel's
    mean), 'neuron' (its centre unit) or 'layer' (the mean of the squared layer, no channel).
    Nothing is written unless ``out`` names a folder.

    >>> import cnncli
    >>> d = cnncli.dream("sample_models/zfnet_mini.onnx", layer=2, channels=[3], steps=4, size=32)
    >>> d.images.shape, d.rows[0].channel
    ((1, 3, 32, 32), 3)
    """
    return run(model, DreamOptions.from_kwargs(options))
