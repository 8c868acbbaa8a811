"""`cnn top` / ``cnncli.top(model, "photos/", layer=3, channels=[1, 2])``: the paper's Fig. 2 over
your own images.

Two phases: :meth:`TopJob.scan` runs the forward passes over the images and keeps each channel's
k strongest (image, location) pairs; :meth:`TopJob.iter_channels` then projects each kept unit
alone and crops its receptive field out of the projection and the image, one channel at a time.
:func:`run` writes, when ``out`` names a folder, a grid PNG per channel and an overview.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

from cnncli.api.options import ImageOptions, channel_list, choice, integer, opt, path, text
from cnncli.api.result import Hear, Result, Warnings
from cnncli.choices import ENGINES, MODES, NORMS
from cnncli.columns import col
from cnncli.errors import BadArgument, CnnError


@dataclass(frozen=True, kw_only=True)
class TopOptions(ImageOptions):
    layer: int = opt(None, "--layer", integer())
    channels: str | None = opt(None, "--channel", channel_list)  # explicit channels: '3,5,12' (a list in Python)
    n_channels: str | None = opt(None, "--channels", channel_list)  # K chosen at random, or 'all' [16]
    seed: int = opt(0, "--seed", integer(0))
    k: int = opt(9, "-k", integer(1))
    mode: str = opt("deconvnet", "--mode", choice(MODES))
    norm: str = opt("percentile", "--norm", choice(NORMS))  # as `cnn project --norm` (grey left deep layers faint)
    batch_size: int = opt(16, "--batch-size", integer(1))
    out: str | None = opt(None, "--out", path(), cli_default="cnn-top")  # None: write nothing
    engine: str = opt("local", "--engine", choice(ENGINES))
    address: str | None = opt(None, "--address", text())  # ray: None starts a local runtime
    workers: int | None = opt(None, "--workers", integer(1, optional=True, maximum=65536))  # ray: actors

    def validate(self) -> None:
        if self.engine == "local" and (self.address is not None or self.workers is not None):
            raise BadArgument("--engine", "--address and --workers need --engine ray")
        if self.channels is not None and self.n_channels is not None:
            raise BadArgument("--channels", "give --channel or --channels, not both")


@dataclass(frozen=True)
class TopEntry:
    image: str
    activation: float
    location: list[int]  # [y, x] in the target map
    box: list[int]  # receptive field in input pixels, clipped: [y0, x0, y1, x1) (end exclusive)


@dataclass(frozen=True)
class ChannelTopRow:
    channel: int = col("channel", "int")
    best: float | None = col("best activation")
    entries: list = col("top images", "entries")
    files: dict = col("files", "files")


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

    def tiles(self, norm: str = "percentile") -> list:
        """The projection crops as shown by ``cnn top --norm``: uint8 [h, w, 3] (or [h, w])."""
        from cnncli.imaging.pictures import to_display

        return [to_display(p, choice(NORMS)("--norm", norm), self.bgr) for p in self.projections]


class TopResult(Result, list):
    """The channels' top k (a list of :class:`TopChannel`; empty when the run kept no arrays),
    with ``meta`` (model, images, scanned, skipped, layer, tensor, mode, k, receptive_field,
    overview, preprocess), one ChannelTopRow per channel in ``rows``, ``skipped`` (unreadable
    images), ``files`` and ``warnings``.

    >>> [ch.best for ch in res]  # doctest: +SKIP
    """

    def __init__(self, items: Sequence[TopChannel], meta: dict[str, Any], skipped: list[str],
                 rows: list[ChannelTopRow] | None = None, warnings: list[str] | None = None,
                 files: list[str] | None = None):
        super().__init__(items)
        self.meta, self.skipped, self.rows = meta, skipped, rows or []
        self.warnings, self.files = warnings or [], files or []

    def document(self):
        from cnncli.render import Document

        m = self.meta
        title = f"{m['model']} · layer {m['layer']} ({m['tensor']}) · top {m['k']} of {m['scanned']} images"
        return Document(rows=self.rows, row_type=ChannelTopRow, rows_key="channels", meta=m, title=title,
                        files={"overview": m.get("overview")})


def choose_channels(channels: Any, n_channels: Any, seed: int, n: int) -> list[int]:
    """Explicit channels ('3,5,12', 'all', or a list), or ``n_channels`` chosen at random with
    ``seed`` (a count or 'all'; default 16)."""
    import numpy as np

    from cnncli.engine.targets import parse_channels

    if channels is not None:
        if n_channels is not None:
            raise BadArgument("--channels", "give --channel or --channels, not both")
        return parse_channels(channel_list("--channel", channels), None, n)
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
    options: TopOptions
    prep: Any  # Preprocess
    batch: int  # images per forward run
    provider: str
    paths: Iterable[str]
    images_label: str
    rf: Any = None  # receptive field of the target (per axis), None when unknown
    meta: dict[str, Any] = field(default_factory=dict)
    identity: Callable[[], tuple[str, ...]] = tuple  # model, images, preprocessing: in the file names (after the scan)

    def loader(self) -> Callable[[str], tuple]:
        """path -> (uint8 pixels [H, W, C], float32 input [1, C, H, W])."""
        if self.options.engine == "ray":  # a list may name URIs: read them as the Ray scan read them
            from cnncli.scale.reading import uri_loader

            return uri_loader(self.model, self.prep)
        from cnncli.engine.model_input import image_loader

        return image_loader(self.model, self.prep)

    def forward_bytes(self) -> bytes:
        """The model cut at the target (the scan's forward pass), serialised."""
        from cnncli.engine.project import forward_model

        m = self.model
        return forward_model(m.model, [self.target.tensor], {}, m.graph.types).SerializeToString()

    def forward_session(self):
        """An onnxruntime session of the model cut at the target (the scan's forward pass)."""
        from cnncli.runtime.sessions import make_session

        return make_session(self.forward_bytes(), self.provider, self.options.verbose)

    def scan(self, progress: Callable[[int], None] | None = None):
        """Forward passes over every image; per channel the k strongest. A ScanResult."""
        m, o = self.model, self.options
        if o.engine == "ray":
            from cnncli.scale.ray_top import ray_scan

            result = ray_scan(self.forward_bytes(), m.input_name, self.target.tensor, tuple(m.shape[1:]), self.prep,
                              self.paths, self.channels, o.k, self.batch, self.provider, o.workers, o.address,
                              o.verbose, progress)
        else:
            from cnncli.engine.top import scan

            load = self.loader()
            result = scan(self.forward_session(), m.input_name, self.target.tensor, self.paths,
                          lambda p: load(p)[1], self.channels, o.k, self.batch, progress)
        if result.scanned == 0:
            from cnncli.imaging.sources import skipped_text

            reasons = getattr(load, "failures", None) if o.engine != "ray" else None
            raise CnnError(f"no readable images in '{self.images_label}'"
                           + (f": {len(result.skipped)} skipped: {skipped_text(result.skipped, reasons)}"
                              if result.skipped else ""))
        self.meta.update(scanned=result.scanned, skipped=len(result.skipped))
        return result

    def iter_channels(self, result) -> Iterator[TopChannel]:
        """Each channel's kept units projected alone (in batches) and cropped, channel by channel."""
        from cnncli.engine.project import Projector

        m, o = self.model, self.options
        projector = Projector(m.model, m.graph, m.input_name, self.target.tensor, o.mode, self.provider,
                              o.verbose, max_batch=self.batch)
        load = self.loader()
        for row, c in enumerate(self.channels):
            yield project_entries(projector, load, c, result.top.entries(row), self.rf, (m.shape[2], m.shape[3]),
                                  self.batch, self.prep.bgr)


def project_entries(projector, load, channel: int, found: list[tuple[float, str, list[int]]], rf, hw: tuple[int, int],
                    batch: int, bgr: bool = False) -> TopChannel:
    """One channel's kept units ``found`` [(activation, path, [y, x])], each projected alone on its
    own image (``batch`` images per run), cropped to its receptive field."""
    import numpy as np

    from cnncli.imaging.preprocess import display_pixels

    h, w = hw
    entries, projections, patches = [], [], []
    for start in range(0, len(found), batch):
        chunk = found[start:start + batch]
        loaded = [load(path) for _, path, _ in chunk]
        x = np.concatenate([t for _, t in loaded], axis=0)
        proj = (projector.project_units(x, [(channel, tuple(loc)) for _, _, loc in chunk]) if projector is not None
                else [None] * len(chunk))  # (`cnn report` where nothing can be projected: the patches alone)
        for (value, path, loc), (raw, _), p in zip(chunk, loaded, proj):
            (y0, y1), (x0, x1) = (rf[0].box(loc[0], h), rf[1].box(loc[1], w)) if rf else ((0, h), (0, w))
            entries.append(TopEntry(path, value, loc, [y0, x0, y1, x1]))
            projections.append(None if p is None else np.ascontiguousarray(p[:, y0:y1, x0:x1]))
            patches.append(np.ascontiguousarray(display_pixels(raw)[y0:y1, x0:x1]))
    return TopChannel(channel, entries, projections, patches, bgr)


def _batch_run(m, tensor: str, paths: Iterable[str], batch: int, k: int, limit: int | None) -> tuple[Iterable[str], int]:
    """The batch the scan will run, at most the number of images (``--batch-size 100000`` over 11
    images runs 11, and needs memory for 11), with the paths (those read ahead to learn it first).
    Paths are read ahead in doubling steps, the memory of each step checked before the next, so an
    endless list is never read further than memory allows."""
    import itertools

    from cnncli.engine.model_input import check_run_memory

    it, head, want = iter(paths), [], min(batch, 256)
    hint = "a smaller --batch-size" if batch > 1 else ""
    while True:
        head.extend(itertools.islice(it, want - len(head)))
        if len(head) < want:  # every image is listed: the one batch holds them all
            rows = max(1, len(head))
            check_run_memory(m, tensor, rows, min(rows, k), limit, hint)
            return head, rows
        check_run_memory(m, tensor, want, min(want, k), limit, hint)
        if want == batch:
            return itertools.chain(head, it), batch
        want = min(batch, 2 * want)


def prepare(model: Any, images: Any, options: TopOptions, stdin=None) -> TopJob:
    """Check and load everything for a top-k run; nothing runs yet."""
    from cnncli.api.sources import load, model_identity
    from cnncli.costs.receptive import receptive_fields
    from cnncli.engine.memory import check_memory, topk_bytes
    from cnncli.engine.model_input import check_feedable, model_preprocess, open_for_images
    from cnncli.engine.targets import by_layer
    from cnncli.runtime.sessions import resolve_provider

    o = options
    if isinstance(model, str) and model == "-" and isinstance(images, str) and images == "-":
        raise BadArgument("IMAGES", "the model is read from standard input: give the images as a folder, glob or list file")
    provider = resolve_provider(o.provider)
    m = open_for_images(load(model), o.size, o.input_name)
    model_id = model_identity(model, m)
    target = by_layer(m.graph, o.layer)
    if len(target.shape) != 4:
        raise CnnError(f"layer {o.layer}'s output '{target.tensor}' is not a 4-D feature map")
    check_feedable(m, target.tensor, "cnn top")
    chosen = choose_channels(o.channels, o.n_channels, o.seed, target.shape[1])
    prep = model_preprocess(m, o.preset, o.mean, o.std, o.bgr)
    from cnncli.api.top_files import listed_paths

    paths, label, images_id = listed_paths(images, stdin)
    paths, batch = _batch_run(m, target.tensor, paths, o.batch_size if m.batchable else 1, o.k, o.max_memory)
    try:
        check_memory(topk_bytes(len(chosen), o.k, batch), o.max_memory,
                     f"keeping the top {o.k} of {len(chosen)} channel(s)", "a smaller -k")
    except CnnError as exc:
        raise BadArgument("-k", str(exc)) from None
    rf = receptive_fields(m.graph).get(target.tensor)
    meta = {"model": m.name, "images": label, "scanned": 0, "skipped": 0, "layer": o.layer, "tensor": target.tensor,
            "mode": o.mode, "k": o.k, "receptive_field": [a.size for a in rf] if rf else None,
            "preprocess": {**prep.describe(), "size": [m.shape[2], m.shape[3]]}}
    size = f"{m.shape[2]}x{m.shape[3]}"
    return TopJob(m, target, chosen, o, prep, batch, provider, paths, label, rf, meta,
                  lambda: (model_id, images_id(), repr(prep.describe()), size))


_META_ORDER = ("model", "images", "scanned", "skipped", "layer", "tensor", "mode", "k", "receptive_field", "overview",
               "preprocess")


def run(model: Any, images: Any, options: TopOptions, *, stdin=None, progress: Callable[[int], None] | None = None,
        on_warning: Hear | None = None, arrays: bool = True) -> TopResult:
    """The k strongest activations of a layer's channels over ``images`` (a folder, a glob, a text
    file of paths, '-' for paths on ``stdin``, or a list of paths), each projected alone and cropped
    to its receptive field; with ``options.out``, a grid PNG per channel (written as each channel is
    done) and an overview of all of them. ``arrays=False`` keeps no crops (rows only)."""
    from pathlib import Path

    from cnncli.api.top_files import GridWriter
    from cnncli.atomic import check_writable_dir
    from cnncli.frontend.damage import damage_explained

    o = options
    warnings = Warnings(on_warning)
    with damage_explained(), warnings.capturing():  # a crash on a damaged model file: its one-line error
        if o.out is not None:
            check_writable_dir(Path(o.out))
        job = prepare(model, images, o, stdin)
        label = images if isinstance(images, (str, os.PathLike)) else job.images_label
        writer = GridWriter(job, o.out, os.fspath(label)) if o.out is not None else None
        result = job.scan(progress)
        if result.skipped:
            names = ", ".join(result.skipped[:3]) + (", …" if len(result.skipped) > 3 else "")
            warnings.add(f"skipped {len(result.skipped)} unreadable image(s): {names}")
        items, rows = [], []
        for ch in job.iter_channels(result):
            files = writer.channel(ch) if writer is not None else {}
            rows.append(ChannelTopRow(ch.channel, ch.best, ch.entries, files))
            if arrays:
                items.append(ch)
            del ch
        meta = {**job.meta, "images": os.fspath(label), "overview": writer.overview() if writer is not None else None}
    files = [f for r in rows for f in r.files.values()] + ([meta["overview"]] if meta["overview"] else [])
    return TopResult(items, {key: meta[key] for key in _META_ORDER}, result.skipped, rows, list(warnings), files)


def top(model: Any, images: Any, **options: Any) -> TopResult:
    """The k strongest activations of a layer's channels over ``images`` (a folder, a glob, a
    text file of paths, or a list of paths), each projected alone and cropped to its receptive
    field; the options of ``cnn top``. ``channels``: an int, a list or 'all'; else
    ``n_channels`` at random (``seed``; 16). Nothing is written unless ``out`` names a folder.

    >>> import cnncli
    >>> res = cnncli.top("sample_models/zfnet_mini.onnx", "sample_models/images", layer=2, channels=[3], k=2)
    >>> len(res[0].entries), res[0].patches[0].dtype
    (2, dtype('uint8'))
    """
    return run(model, images, TopOptions.from_kwargs(options))
