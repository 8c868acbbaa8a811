"""`cnn cam` / ``cnncli.cam(model, image, layer=5)``: class activation maps (Grad-CAM and its
family, Eigen-CAM, Score-CAM) of a layer for a score of the model, on one image or many.

The gradient methods read the gradient of the score at the layer from the generated reverse graph
(backprop mode, stopped at the layer); the formulas are pytorch-grad-cam's
(cnncli.engine.cam_methods). :func:`prepare` checks everything that can fail before any work;
:func:`run` goes through the images in batches and, when ``out`` names a folder, writes each
map's files as it comes (cnncli.api.cam_files).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from cnncli.api.cam_inputs import CamImages, layer_spec, open_images
from cnncli.api.options import ImageOptions, channel_list, choice, flag, integer, opt, path, text
from cnncli.api.result import Hear, Result, Warnings
from cnncli.columns import col
from cnncli.choices import CAM_METHODS as METHODS
from cnncli.errors import BadArgument, CnnError


@dataclass(frozen=True, kw_only=True)
class CamOptions(ImageOptions):
    layer: int | str | None = opt(None, "--layer", layer_spec)  # N (as `cnn stats` numbers) or a tensor name
    method: str = opt("gradcam", "--method", choice(METHODS))
    guided: bool = opt(False, "--guided", flag)
    output: str | None = opt(None, "--output", text())
    classes: str | None = opt(None, "--class", channel_list)  # '3' or '3,5' (an int or a list in Python)
    top: int | None = opt(None, "--top", integer(1, optional=True))
    tensor: str | None = opt(None, "--tensor", text())
    channel: int | None = opt(None, "--channel", integer(0, optional=True))
    out: str | None = opt(None, "--out", path(), cli_default="cnn-cam")  # None: write nothing
    save_npy: bool = opt(False, "--save-npy", flag)
    figure: bool = opt(True, "--figure", flag)
    batch_size: int = opt(16, "--batch-size", integer(1))
    evaluate: bool = opt(False, "--evaluate", flag)  # deletion/insertion AUC and ROAD (cnncli.engine.cam_metrics)

    def validate(self) -> None:
        if self.tensor is not None:
            if self.channel is None:
                raise BadArgument("--tensor", "give --channel C with --tensor T (the score: channel C summed over space)")
            for name, flag_ in ((self.output, "--output"), (self.classes, "--class"), (self.top, "--top")):
                if name is not None:
                    raise BadArgument(flag_, "scores a class of an output; give it or --tensor T --channel C, not both")
        elif self.channel is not None:
            raise BadArgument("--channel", "needs --tensor T (for a classifier's output use --class)")
        if self.classes is not None and self.top is not None:
            raise BadArgument("--top", "give --class or --top, not both")


# the figures --evaluate adds to each row (cnncli.engine.cam_metrics.evaluate's keys; None without it)
METRICS = ("deletion_auc", "insertion_auc", "road_morf", "road_lerf", "road_combined")


def _row_type():
    """CamRow: a frozen dataclass whose second column is named ``class`` (a Python keyword, so the
    class is made by hand: the JSON key is the issue's ``class``)."""
    ns = {"__annotations__": {}, "__doc__": "One map: the image, the class (or channel) scored, its label, the score y, "
                                            "the files and (with --evaluate) the map's deletion/insertion AUC and ROAD figures."}
    for name, kind, value in (("image", str, col("image", "path", compact=True)), ("class", int, col("class", "int", compact=True)),
                              ("label", str, col("label", compact=True)), ("score", float, col("score", compact=True)),
                              ("files", dict, col("files", "files", compact=True)),
                              *((key, float, col(key.replace("_", " "))) for key in METRICS)):
        ns["__annotations__"][name], ns[name] = kind, value
    cls = dataclass(frozen=True, init=False, repr=False, eq=False)(type("CamRow", (), ns))
    names = [f.name for f in dataclasses.fields(cls)]

    def __init__(self, *values, **metrics):
        values = (*values, *(metrics.get(key) for key in METRICS))
        for name, value in zip(names, values, strict=True):
            object.__setattr__(self, name, value)

    cls.__init__ = __init__
    cls.__repr__ = lambda self: "CamRow(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in names) + ")"
    cls.__eq__ = lambda self, other: type(other) is cls and all(getattr(self, n) == getattr(other, n) for n in names)
    cls.__module__ = __name__
    return cls


CamRow = _row_type()


@dataclass(frozen=True, eq=False)
class CamMap:
    """One class activation map: ``map`` float32 [h, w] at the layer's resolution (after the ReLU,
    before upsampling and normalisation; what ``--save-npy`` writes), ``unit`` the class (or
    channel) scored and ``score`` its value y; ``guided`` the guided-backprop image [C, H, W] of
    the same score with ``--guided``.

    >>> m.upsampled((112, 112)).shape  # doctest: +SKIP
    """

    image: str
    unit: int
    label: str | None
    score: float
    map: Any  # np.ndarray
    guided: Any = None
    pixels: Any = None  # uint8 [H, W, 3], the input as shown
    metrics: dict | None = None  # with evaluate: cnncli.engine.cam_metrics.evaluate's figures

    def upsampled(self, size: tuple[int, int] | None = None):
        """The map scaled to [0, 1] and upsampled (bilinear) to ``size`` (default: the input's)."""
        from cnncli.engine.cam import upsampled

        return upsampled(self.map, size or tuple(self.pixels.shape[:2]))

    def guided_cam(self):
        """Guided Grad-CAM: the upsampled map times the guided-backprop image, [C, H, W]."""
        if self.guided is None:
            raise CnnError("no guided-backprop image: run with guided=True")
        return self.guided * self.upsampled(self.guided.shape[1:])[None]


class CamResult(Result, list):
    """The maps (a list of :class:`CamMap`, image by image, class by class; empty when the run
    kept no arrays), with ``meta`` (model, input, layer, tensor, method, score, guided,
    forward_runs, preprocess), one CamRow per map in ``rows``, ``files``, ``skipped`` and ``warnings``."""

    def __init__(self, items: Sequence[CamMap], meta: dict[str, Any], rows: list, warnings: list[str],
                 skipped: list[str]):
        super().__init__(items)
        self.meta, self.rows, self.warnings, self.skipped = meta, rows, warnings, skipped
        self.files = [f for r in rows for f in r.files.values()]

    def document(self):
        from cnncli.render import Document

        m = self.meta
        where = f"layer {m['layer']} ({m['tensor']})" if m["layer"] is not None else m["tensor"]
        title = f"{m['model']} · {where} · {m['method']}{' + guided' if m['guided'] else ''} · {m['input']}"
        return Document(rows=self.rows, row_type=CamRow, rows_key="results", meta=m, title=title)


@dataclass
class CamJob:
    """Everything a CAM run needs, checked before any work."""

    images: CamImages
    engine: Any  # CamEngine
    choose: Callable  # score-tensor values [N, ...] -> units [N][S]
    labels: list[str] | None
    options: CamOptions
    meta: dict[str, Any] = field(default_factory=dict)


def prepare(model: Any, images: Any, options: CamOptions, stdin=None) -> CamJob:
    """Check and load everything for a CAM run; nothing runs yet."""
    from cnncli.api.cam_inputs import resolve_layer, resolve_score
    from cnncli.engine.cam import CamEngine
    from cnncli.engine.model_input import check_feedable, check_run_memory
    from cnncli.runtime.sessions import resolve_provider

    o = options
    provider = resolve_provider(o.provider)
    imgs = open_images(model, images, o, stdin)
    m = imgs.model
    target = resolve_layer(m.graph, o.layer)
    score, choose, labels = resolve_score(m, o)
    for t in (target.tensor, score.tensor):
        check_feedable(m, t, "cnn cam")
    rows = imgs.batch
    check_run_memory(m, score.tensor, rows, rows * choose.count, o.max_memory,
                     "a smaller --batch-size" if rows > 1 else "")
    engine = CamEngine(m.model, m.graph, m.input_name, target.tensor, score, o.method, provider, o.verbose,
                       o.batch_size, o.guided)
    meta = {"model": m.name, "input": imgs.label, "layer": target.layer, "tensor": target.tensor, "method": o.method,
            "score": score.tensor, "guided": o.guided, "forward_runs": 0, "preprocess": imgs.preprocess}
    return CamJob(imgs, engine, choose, labels, o, meta)


def run(model: Any, images: Any, options: CamOptions, *, stdin=None, progress: Callable[..., None] | None = None,
        on_warning: Hear | None = None, arrays: bool = True) -> CamResult:
    """Class activation maps of ``images`` (one image, or a folder, glob, list file or list of
    paths, as ``cnn top`` takes them); with ``options.out`` each map's PNG (colormap), figure
    (input | map | overlay) and with ``save_npy`` its raw map are written as they come.
    ``progress(n, total=...)``: once with n=0, then n=images done. ``arrays=False`` keeps no maps."""
    from pathlib import Path

    from cnncli.api.cam_files import CamWriter
    from cnncli.atomic import check_writable_dir
    from cnncli.frontend.damage import damage_explained

    o = options
    warnings = Warnings(on_warning)
    with damage_explained(), warnings.capturing():
        if o.out is not None:
            check_writable_dir(Path(o.out))
        job = prepare(model, images, o, stdin)
        writer = CamWriter(job, o.out) if o.out is not None else None
        if progress:
            progress(0, total=job.images.count)
        items, rows = [], []
        for batch in job.images.batches():
            if progress:
                progress(len(batch.names) + len(batch.skipped))
            if not batch.names:
                continue
            result = job.engine.run(batch.x, job.choose)
            for i, name in enumerate(batch.names):
                for j, unit in enumerate(result.units[i]):
                    label = job.labels[unit] if job.labels and unit < len(job.labels) else None
                    guided = result.guided[i, j] if result.guided is not None else None
                    item = CamMap(name, unit, label, float(result.scores[i, j]), result.maps[i, j], guided,
                                  batch.pixels[i])
                    if o.evaluate:
                        item = dataclasses.replace(item, metrics=job.engine.evaluate(batch.x[i], unit, item.upsampled()))
                    files = writer.write(item, batch.identities[i]) if writer is not None else {}
                    rows.append(CamRow(name, unit, label, item.score, files,
                                       **{k: item.metrics[k] for k in METRICS} if item.metrics else {}))
                    if arrays:
                        items.append(item)
        skipped = job.images.skipped
        if not rows:
            raise CnnError(f"no readable images in '{job.images.label}'")
        if skipped:
            names = ", ".join(skipped[:3]) + (", …" if len(skipped) > 3 else "")
            warnings.add(f"skipped {len(skipped)} unreadable image(s): {names}")
        meta = {**job.meta, "forward_runs": job.engine.forwards}
    return CamResult(items, meta, rows, list(warnings), skipped)


def cam(model: Any, images: Any, **options: Any) -> CamResult:
    """Class activation maps of a layer for a class of the model (Grad-CAM by default; ``method``
    'gradcam++', 'hirescam', 'xgradcam', 'layercam', 'eigencam', 'scorecam'); the options of
    ``cnn cam``. ``layer``: the N-th Conv as ``cnn stats`` numbers them, or a tensor name (default:
    the last Conv with a map larger than 1x1); ``classes`` (an int or a list) or ``top`` (default: the top class), or
    ``tensor`` and ``channel`` for any other score. ``images``: one image (a path, a PIL image, an
    array) or several (a folder, glob, list file, or a list of paths). Nothing is written unless
    ``out`` names a folder.

    >>> import cnncli
    >>> res = cnncli.cam("sample_models/zfnet_mini.onnx", "sample_models/images/star.png", layer=5)
    >>> res[0].label, res[0].map.shape
    ('star', (7, 7))
    """
    return run(model, images, CamOptions.from_kwargs(options))
