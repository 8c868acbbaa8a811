"""The paper's Fig. 2 from Python: ``cnncli.top(model, "photos/", layer=3, channels=[1, 2])``.

Two phases, as in ``cnn top``: :meth:`TopJob.scan` runs the forward passes over the images and
keeps each channel's k strongest (image, location) pairs; :meth:`TopJob.iter_channels` then
projects each kept unit alone and crops its receptive field out of the projection and the image,
one channel at a time. The CLI (cnncli.commands.top) and the Ray engine reuse these steps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from cnncli.errors import BadArgument, CnnError


@dataclass(frozen=True, eq=False)
class TopChannel:
    """One channel's top k: ``entries`` (TopEntry: image, activation, location [y, x] in the map,
    box [y0, x0, y1, x1) in input pixels), and per entry the projection cropped to its box
    (``projections``: float32 [C, h, w]) and the preprocessed image's patch (``patches``: uint8
    [h, w, 3]).

    >>> ch.entries[0].image, ch.patches[0].shape  # doctest: +SKIP
    """

    channel: int
    entries: list
    projections: list[np.ndarray]
    patches: list[np.ndarray]
    bgr: bool = False

    @property
    def best(self) -> float | None:
        return self.entries[0].activation if self.entries else None

    def tiles(self, norm: str = "grey") -> list[np.ndarray]:
        """The projection crops as shown by ``cnn top``: uint8 [h, w, 3] (or [h, w])."""
        from cnncli.imaging.pictures import to_display

        return [to_display(p, norm, self.bgr) for p in self.projections]


class TopResult(list):
    """The channels' top k (a list of :class:`TopChannel`), with ``meta`` (model, images, scanned,
    skipped, layer, tensor, mode, k, receptive_field, preprocess) and ``skipped`` (unreadable
    images).

    >>> [ch.best for ch in res]  # doctest: +SKIP
    """

    def __init__(self, items: Sequence[TopChannel], meta: dict[str, Any], skipped: list[str]):
        super().__init__(items)
        self.meta, self.skipped = meta, skipped


def choose_channels(channels: Any, n_channels: Any, seed: int, n: int) -> list[int]:
    """Explicit channels (an int, a list, '3,5,12', 'all'), or ``n_channels`` chosen at random
    with ``seed`` (an int or 'all'; default 16)."""
    from cnncli.api.project import channels_text
    from cnncli.engine.targets import parse_channels

    if channels is not None:
        if n_channels is not None:
            raise BadArgument("--channels", "give --channel or --channels, not both")
        return parse_channels(channels_text(channels), None, n)
    spec = str(n_channels if n_channels is not None else 16).strip().lower()
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
    rng = np.random.default_rng(seed)
    return sorted(int(c) for c in rng.choice(n, size=count, replace=False))


@dataclass
class TopJob:
    """Everything a top-k run needs, checked before any work."""

    model: Any  # RunnableModel
    target: Any  # Target
    channels: list[int]
    k: int
    mode: str
    prep: Any  # Preprocess
    batch: int  # images per forward run
    provider: str
    paths: Iterable[str]
    images_label: str
    verbose: bool = False
    rf: Any = None  # receptive field of the target (per axis), None when unknown
    meta: dict[str, Any] = field(default_factory=dict)
    engine: str = "local"  # "local", or "ray" (cnncli.scale.ray_top) for the scan
    address: str | None = None  # ray: the cluster to join
    workers: int | None = None  # ray: actors

    def loader(self) -> Callable[[str], tuple[np.ndarray, np.ndarray]]:
        """path -> (uint8 pixels [H, W, C], float32 input [1, C, H, W])."""
        from cnncli.engine.model_input import image_loader

        return image_loader(self.model, self.prep)

    def forward_bytes(self) -> bytes:
        """The model cut at the target (the scan's forward pass), serialised."""
        from cnncli.engine.project import forward_model

        m = self.model
        return forward_model(m.model, [self.target.tensor], {}, m.graph.types).SerializeToString()

    def forward_session(self):
        """An onnxruntime session of the model cut at the target (the scan's forward pass)."""
        from cnncli.engine.runtime import make_session

        return make_session(self.forward_bytes(), self.provider, self.verbose)

    def scan(self, progress: Callable[[int], None] | None = None):
        """Forward passes over every image; per channel the k strongest. A ScanResult."""
        m = self.model
        if self.engine == "ray":
            from cnncli.scale.ray_top import ray_scan

            result = ray_scan(self.forward_bytes(), m.input_name, self.target.tensor, tuple(m.shape[1:]), self.prep, self.paths,
                              self.channels, self.k, self.batch, self.provider, self.workers, self.address,
                              self.verbose, progress)
        else:
            from cnncli.engine.top import scan

            load = self.loader()
            result = scan(self.forward_session(), m.input_name, self.target.tensor, self.paths,
                          lambda p: load(p)[1], self.channels, self.k, self.batch, progress)
        if result.scanned == 0:
            from cnncli.imaging.sources import skipped_text

            reasons = getattr(load, "failures", None) if self.engine != "ray" else None
            raise CnnError(f"no readable images in '{self.images_label}'"
                           + (f": {len(result.skipped)} skipped: {skipped_text(result.skipped, reasons)}"
                              if result.skipped else ""))
        self.meta.update(scanned=result.scanned, skipped=len(result.skipped))
        return result

    def iter_channels(self, result) -> Iterator[TopChannel]:
        """Each channel's kept units projected alone (in batches) and cropped, channel by channel."""
        from cnncli.engine.project import Projector

        m = self.model
        projector = Projector(m.model, m.graph, m.input_name, self.target.tensor, self.mode, self.provider,
                              self.verbose, max_batch=self.batch)
        load = self.loader()
        for row, c in enumerate(self.channels):
            yield project_entries(projector, load, c, result.top.entries(row), self.rf, (m.shape[2], m.shape[3]),
                                  self.batch, self.prep.bgr)


def project_entries(projector, load, channel: int, found: list[tuple[float, str, list[int]]], rf, hw: tuple[int, int],
                    batch: int, bgr: bool = False) -> TopChannel:
    """One channel's kept units ``found`` [(activation, path, [y, x])], each projected alone on its
    own image (``batch`` images per run), cropped to its receptive field."""
    from cnncli.imaging.preprocess import display_pixels
    from cnncli.engine.top import TopEntry

    h, w = hw
    entries, projections, patches = [], [], []
    for start in range(0, len(found), batch):
        chunk = found[start:start + batch]
        loaded = [load(path) for _, path, _ in chunk]
        x = np.concatenate([t for _, t in loaded], axis=0)
        proj = projector.project_units(x, [(channel, tuple(loc)) for _, _, loc in chunk])
        for (value, path, loc), (raw, _), p in zip(chunk, loaded, proj):
            (y0, y1), (x0, x1) = (rf[0].box(loc[0], h), rf[1].box(loc[1], w)) if rf else ((0, h), (0, w))
            entries.append(TopEntry(path, value, loc, [y0, x0, y1, x1]))
            projections.append(np.ascontiguousarray(p[:, y0:y1, x0:x1]))
            patches.append(np.ascontiguousarray(display_pixels(raw)[y0:y1, x0:x1]))
    return TopChannel(channel, entries, projections, patches, bgr)


def _paths(images: Any, stdin=None) -> tuple[Iterable[str], str]:
    from cnncli.imaging.sources import iter_image_paths, unique_paths

    if isinstance(images, (str, os.PathLike)):
        spec = os.fspath(images)
        return iter_image_paths(spec, stdin), spec
    try:
        listed = list(unique_paths(os.fspath(p) for p in images))
    except TypeError:
        raise BadArgument("IMAGES", "give a folder, a glob, a list file, '-', or a list of paths") from None
    return listed, f"<{len(listed)} paths>"


def prepare(model: Any, images: Any, layer: int, channels: Any = None, n_channels: Any = None, seed: int = 0,
            k: int = 9, mode: str = "deconvnet", batch_size: int = 16, preset: str | None = None,
            mean: Sequence[float] | None = None, std: Sequence[float] | None = None, bgr: bool | None = None,
            size: tuple[int, int] | None = None, input_name: str | None = None, provider: str = "auto",
            verbose: bool = False, stdin=None, engine: str = "local", address: str | None = None,
            workers: int | None = None, max_memory: int | None = None) -> TopJob:
    """Check and load everything for a top-k run; nothing runs yet. ``max_memory`` (bytes)
    replaces the memory available as the limit of the run's estimated memory."""
    from cnncli.api.project import MODES, _check
    from cnncli.api.sources import load
    from cnncli.engine.model_input import check_feedable, check_run_memory, model_preprocess, open_for_images
    from cnncli.costs.receptive import receptive_fields
    from cnncli.engine.runtime import resolve_provider
    from cnncli.engine.targets import by_layer

    if k < 1:
        raise BadArgument("-k", "must be at least 1")
    if batch_size < 1:
        raise BadArgument("--batch-size", f"must be at least 1, not {batch_size}")
    _check("mode", mode, MODES)
    if isinstance(model, str) and model == "-" and isinstance(images, str) and images == "-":
        raise BadArgument("IMAGES", "the model is read from standard input: give the images as a folder, glob or list file")
    provider = resolve_provider(provider)
    m = open_for_images(load(model), size, input_name)
    target = by_layer(m.graph, layer)
    if len(target.shape) != 4:
        raise CnnError(f"layer {layer}'s output '{target.tensor}' is not a 4-D feature map")
    check_feedable(m, target.tensor, "cnn top")
    batch = batch_size if m.batchable else 1
    check_run_memory(m, target.tensor, batch, batch, max_memory, "a smaller --batch-size" if batch > 1 else "")
    chosen = choose_channels(channels, n_channels, seed, target.shape[1])
    prep = model_preprocess(m, preset, mean, std, bgr)
    paths, label = _paths(images, stdin)
    rf = receptive_fields(m.graph).get(target.tensor)
    meta = {"model": m.name, "images": label, "scanned": 0, "skipped": 0, "layer": layer, "tensor": target.tensor,
            "mode": mode, "k": k, "receptive_field": [a.size for a in rf] if rf else None,
            "preprocess": {**prep.describe(), "size": [m.shape[2], m.shape[3]]}}
    return TopJob(m, target, chosen, k, mode, prep, batch, provider, paths, label,
                  verbose, rf, meta, engine, address, workers)


def top(model: Any, images: Any, layer: int, channels: Any = None, k: int = 9, *, n_channels: Any = None,
        seed: int = 0, mode: str = "deconvnet", batch_size: int = 16, preset: str | None = None,
        mean: Sequence[float] | None = None, std: Sequence[float] | None = None, bgr: bool | None = None,
        size: tuple[int, int] | None = None, input_name: str | None = None, provider: str = "auto",
        progress: Callable[[int], None] | None = None) -> TopResult:
    """The k strongest activations of a layer's channels over ``images`` (a folder, a glob, a
    text file of paths, or a list of paths), each projected alone and cropped to its receptive
    field. ``channels``: an int, a list or 'all'; else ``n_channels`` at random (``seed``; 16).

    >>> import cnncli
    >>> res = cnncli.top("sample_models/zfnet_mini.onnx", "sample_models/images", layer=2, channels=[3], k=2)
    >>> len(res[0].entries), res[0].patches[0].dtype
    (2, dtype('uint8'))
    """
    from cnncli.frontend.damage import damage_explained

    with damage_explained():  # a crash on a damaged model file: its one-line error
        job = prepare(model, images, layer, channels, n_channels, seed, k, mode, batch_size, preset, mean, std, bgr,
                      size, input_name, provider)
        result = job.scan(progress)
        return TopResult(list(job.iter_channels(result)), job.meta, result.skipped)
