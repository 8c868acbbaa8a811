"""Deconvnet projections from Python: ``cnncli.project(model, image, layer=5, top=4)``.

The same code path as ``cnn project``: :func:`prepare` resolves everything that can fail before
any work (model, image, target, channels, options); :meth:`ProjectionJob.run` then streams the
projections one chunk of channels at a time; the CLI writes each to files as it comes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from cnncli.errors import BadArgument

MODES = ("deconvnet", "backprop", "guided")
KEEPS = ("map", "max")
NORMS = ("grey", "minmax", "percentile")
DEFAULT_TOP = 4  # channels projected when neither channels nor top is given


@dataclass(frozen=True, eq=False)
class Projection:
    """One channel of the target projected back to the input.

    ``array`` is float32 [C, H, W], shaped like one model input (in the model's channel order);
    ``activation`` the channel's largest activation on the image and ``location`` its [y, x]
    (None for a 2-D target such as logits).

    >>> p.to_image("percentile").save("c12.png")  # doctest: +SKIP
    """

    channel: int
    activation: float
    location: list[int] | None
    array: np.ndarray
    bgr: bool = False  # the model takes BGR: pictures flip the channels back to RGB

    def to_uint8(self, norm: str = "grey") -> np.ndarray:
        """The projection as shown by ``cnn project --norm``: uint8 [H, W, 3] (or [H, W])."""
        from cnncli.imaging.pictures import to_display

        _check("norm", norm, NORMS)
        return to_display(self.array, norm, bgr=self.bgr)

    def to_image(self, norm: str = "grey"):
        """The projection as a PIL image, normalised as ``cnn project --norm`` does (grey: 0 at
        mid-grey, symmetric; minmax; percentile: symmetric, clipped at the 99.5th percentile)."""
        from PIL import Image

        return Image.fromarray(self.to_uint8(norm))


class Projections(list):
    """The projections of one image (a list of :class:`Projection`), with what was projected in
    ``meta`` (model, input, tensor, layer, mode, keep, provider, preprocess) and the input as
    shown in ``pixels`` (uint8 [H, W, 3]).

    >>> res.figure(0).save("fig.png")  # doctest: +SKIP
    """

    def __init__(self, items: Sequence[Projection], meta: dict[str, Any], pixels: np.ndarray):
        super().__init__(items)
        self.meta, self.pixels = meta, pixels
        self.files: list[dict[str, str]] = []  # per projection, when saved

    def figure(self, which: int | Projection = 0, norm: str = "grey", title: str | None = None):
        """Input | projection | overlay side by side, as a PIL image (the CLI's ``_figure.png``)."""
        p = which if isinstance(which, Projection) else self[which]
        return figure_of(p, self.pixels, norm, title or default_title(self.meta, p.channel))

    def _repr_html_(self) -> str:
        import html

        m = self.meta
        head = html.escape(f"{m['model']} · {m['tensor']} · {m['mode']} (keep {m['keep']})")
        rows = "".join(f"<tr><td>{p.channel}</td><td>{p.activation:.4g}</td><td>{html.escape(str(p.location))}</td></tr>"
                       for p in self)
        return (f"<p>{head}</p><table><thead><tr><th>channel</th><th>max activation</th><th>location [y,x]</th>"
                f"</tr></thead><tbody>{rows}</tbody></table>")


def default_title(meta: dict[str, Any], channel: int) -> str:
    from pathlib import Path

    label = f"layer{meta['layer']}" if meta["layer"] is not None else meta["tensor"]
    return f"{Path(meta['model']).name} · {label} · channel {channel} · {meta['mode']}, keep {meta['keep']}"


def figure_of(p: Projection, pixels: np.ndarray, norm: str, title: str):
    from cnncli.imaging.figure import projection_figure

    return projection_figure(pixels, p.to_uint8(norm), p.array, title)


def _check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise BadArgument(f"--{name}", f"'{value}' is not one of {', '.join(allowed)}")


def channels_text(channels: Any) -> str | None:
    """The API's channels (an int, a list of ints, 'all', '3,5,12' or None) as the CLI's text."""
    if channels is None or isinstance(channels, str):
        return channels
    if isinstance(channels, (int, np.integer)):
        return str(int(channels))
    try:
        return ",".join(str(int(c)) for c in channels)
    except (TypeError, ValueError):
        raise BadArgument("--channel", f"{channels!r} is not a channel number, a list of them or 'all'") from None


@dataclass
class ProjectionJob:
    """Everything a projection run needs, checked before any work. ``run()`` streams the results."""

    model: Any  # RunnableModel
    target: Any  # Target
    image: Any  # ImageInput
    channels: list[int] | str  # a list, or 'top' (chosen by strength after the forward run)
    top: int | None
    mode: str
    keep: str
    projector: Any  # Projector
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """How many projections ``run()`` yields."""
        return self.top if self.channels == "top" else len(self.channels)

    def run(self) -> Iterator[Projection]:
        for r in self.projector.iter_project(self.image.x, self.channels, self.keep, self.top):
            yield Projection(r.channel, r.max_activation, r.location, r.projection, self.image.bgr)


def prepare(model: Any, image: Any, layer: int | None = None, tensor: str | None = None, channels: Any = None,
            top: int | None = None, mode: str = "deconvnet", keep: str = "map", preset: str | None = None,
            mean: Sequence[float] | None = None, std: Sequence[float] | None = None, bgr: bool | None = None,
            size: tuple[int, int] | None = None, input_name: str | None = None, provider: str = "auto",
            batch_size: int = 64, verbose: bool = False, max_memory: int | None = None) -> ProjectionJob:
    """Check and load everything for a projection; no projection runs yet. ``max_memory`` (bytes)
    replaces the memory available as the limit of the run's estimated memory."""
    from cnncli.api.sources import open_with_image, prepare_image
    from cnncli.engine.model_input import check_run_memory
    from cnncli.engine.project import Projector
    from cnncli.engine.runtime import resolve_provider
    from cnncli.engine.targets import by_layer, by_tensor, parse_channels

    if (layer is None) == (tensor is None):
        raise BadArgument("--layer", "give exactly one of --layer N or --tensor NAME")
    _check("mode", mode, MODES)
    _check("keep", keep, KEEPS)
    if batch_size < 1:
        raise BadArgument("--batch-size", f"must be at least 1, not {batch_size}")
    provider = resolve_provider(provider)
    m, array = open_with_image(model, image, size, input_name)
    target = by_layer(m.graph, layer, "use --tensor NAME") if layer is not None else by_tensor(m.graph, tensor)
    if len(target.shape) < 2 or target.shape[1] is None:  # found by tests/test_fuzz.py
        from cnncli.errors import CnnError

        raise CnnError(f"the shape of '{target.tensor}' is unknown (shape inference cannot follow the model there)")
    text = channels_text(channels)
    if text is None and top is None:
        top = min(DEFAULT_TOP, target.shape[1])
    chans = parse_channels(text, top, target.shape[1])
    check_run_memory(m, target.tensor, 1, min(top if chans == "top" else len(chans), batch_size), max_memory)
    img = prepare_image(m, image, array, preset, mean, std, bgr)
    projector = Projector(m.model, m.graph, m.input_name, target.tensor, mode, provider, verbose, batch_size)
    meta = {"model": m.name, "input": img.name, "tensor": target.tensor, "layer": target.layer, "mode": mode,
            "keep": keep, "provider": provider, "preprocess": img.preprocess}
    return ProjectionJob(m, target, img, chans, top, mode, keep, projector, meta)


def project(model: Any, image: Any, layer: int | None = None, tensor: str | None = None, channels: Any = None,
            top: int | None = None, mode: str = "deconvnet", keep: str = "map", *, preset: str | None = None,
            mean: Sequence[float] | None = None, std: Sequence[float] | None = None, bgr: bool | None = None,
            size: tuple[int, int] | None = None, input_name: str | None = None, provider: str = "auto",
            batch_size: int = 64, out: str | None = None, norm: str = "grey", save_npy: bool = False,
            figure: bool = True) -> Projections:
    """Project feature maps of one image back to pixels (Zeiler & Fergus deconvnet; ``mode`` may
    also be 'backprop' or 'guided').

    ``model``: a path, bytes or an onnx.ModelProto; ``image``: a path, a PIL image, a uint8 array
    [H, W(, C)] (preprocessed like a file) or a float array shaped like the model input (used as
    it is); ``layer`` (the N-th Conv, as ``cnn stats`` numbers them) or ``tensor``; ``channels``
    (an int, a list, 'all') or ``top`` (the K strongest on this image; default: 4). Nothing is
    written unless ``out`` names a folder (then the files of ``cnn project`` go there).

    >>> import cnncli
    >>> res = cnncli.project("sample_models/zfnet_mini.onnx", "sample_models/images/star.png", layer=5, top=2)
    >>> res[0].array.shape, res[0].array.dtype
    ((3, 112, 112), dtype('float32'))
    """
    from cnncli.frontend.damage import damage_explained

    with damage_explained():  # a crash on a damaged model file: its one-line error
        _check("norm", norm, NORMS)
        job = prepare(model, image, layer, tensor, channels, top, mode, keep, preset, mean, std, bgr, size,
                      input_name, provider, batch_size)
        items, files = [], []
        if out is None:
            items = list(job.run())
        else:  # the files of `cnn project`, written as the CLI writes them
            from cnncli.commands.project import ProjectionWriter, write_streamed

            def collect(p: Projection, written: dict[str, str]) -> None:
                items.append(p)
                files.append(written)

            write_streamed(job, ProjectionWriter(job, out, norm=norm, save_npy=save_npy, figure=figure), collect)
        res = Projections(items, job.meta, job.image.pixels)
        res.files = files
    return res
