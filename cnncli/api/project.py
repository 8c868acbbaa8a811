"""`cnn project` / ``cnncli.project(model, image, layer=5, top=4)``: feature maps projected back to
pixels (the Zeiler & Fergus deconvnet; gradient and guided backprop too).

:func:`prepare` resolves everything that can fail before any work (model, image, target,
channels, memory); :func:`run` then streams the projections one chunk of channels at a time and,
when ``out`` names a folder, writes each as it comes (cnncli.api.project_files).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from cnncli.api.options import ImageOptions, channel_list, choice, flag, integer, opt, path, text
from cnncli.api.project_attr import AttributionRow, check as check_attribution, fraction
from cnncli.api.result import Hear, Result, Warnings
from cnncli.choices import IG_METHODS, KEEPS, MODES, NORMS
from cnncli.columns import col
from cnncli.errors import BadArgument, CnnError

DEFAULT_TOP = 4  # channels projected when neither channels nor top is given


@dataclass(frozen=True, kw_only=True)
class ProjectOptions(ImageOptions):
    layer: int | None = opt(None, "--layer", integer(optional=True))
    tensor: str | None = opt(None, "--tensor", text())
    channels: str | None = opt(None, "--channel", channel_list)  # '3,5,12' or 'all' (an int or a list in Python)
    top: int | None = opt(None, "--top", integer(optional=True))
    mode: str = opt("deconvnet", "--mode", choice(MODES))
    keep: str = opt("map", "--keep", choice(KEEPS))
    norm: str = opt("percentile", "--norm", choice(NORMS))  # grey's largest-magnitude scale left deep layers faint
    out: str | None = opt(None, "--out", path(), cli_default="cnn-out")  # None: write nothing
    save_npy: bool = opt(False, "--save-npy", flag)
    export_reverse: str | None = opt(None, "--export-reverse", path())
    batch_size: int | None = opt(None, "--batch-size", integer(1, optional=True))  # None: from the memory estimate
    figure: bool = opt(True, "--figure", flag)
    # attributions at the pixels (cnncli.api.project_attr): SmoothGrad or integrated gradients
    smooth: int | None = opt(None, "--smooth", integer(1, optional=True, maximum=100_000))
    noise: float | None = opt(None, "--noise", fraction)  # σ as a share of the input's range (default 0.15)
    integrated: int | None = opt(None, "--integrated", integer(1, optional=True, maximum=100_000))
    baseline: str | None = opt(None, "--baseline", text())  # black (default), blur or a file
    ig_method: str | None = opt(None, "--ig-method", choice(IG_METHODS, optional=True))
    seed: int = opt(0, "--seed", integer(0))

    def validate(self) -> None:
        if (self.layer is None) == (self.tensor is None):
            raise BadArgument("--layer", "give exactly one of --layer N or --tensor NAME")
        check_attribution(self)


@dataclass(frozen=True)
class ProjectionRow:
    channel: int = col("channel", "int")
    max_activation: float = col("max activation")
    location: list | None = col("location [y,x]", "dims")
    files: dict = col("files", "files")


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
    array: Any  # np.ndarray
    bgr: bool = False  # the model takes BGR: pictures flip the channels back to RGB
    figures: dict | None = None  # --smooth / --integrated: the AttributionRow's figures

    def to_uint8(self, norm: str = "percentile"):
        """The projection as shown by ``cnn project --norm``: uint8 [H, W, 3] (or [H, W])."""
        from cnncli.imaging.pictures import to_display

        return to_display(self.array, choice(NORMS)("--norm", norm), bgr=self.bgr)

    def to_image(self, norm: str = "percentile"):
        """The projection as a PIL image, normalised as ``cnn project --norm`` does (grey: 0 at
        mid-grey, symmetric; minmax; percentile: symmetric, clipped at the 99.5th percentile)."""
        from PIL import Image

        return Image.fromarray(self.to_uint8(norm))


class Projections(Result, list):
    """The projections of one image (a list of :class:`Projection`; empty when the run kept no
    arrays), with what was projected in ``meta`` (model, input, tensor, layer, mode, keep,
    provider, preprocess), the input as shown in ``pixels`` (uint8 [H, W, 3]), one ProjectionRow
    per channel in ``rows`` (with the files written for it), ``files`` and ``warnings``.

    >>> res.figure(0).save("fig.png")  # doctest: +SKIP
    """

    def __init__(self, items: Sequence[Projection], meta: dict[str, Any], pixels, rows: list[ProjectionRow],
                 warnings: list[str]):
        super().__init__(items)
        self.meta, self.pixels, self.rows, self.warnings = meta, pixels, rows, warnings
        self.files = [f for r in rows for f in r.files.values()]
        self.box_of: Callable[[Projection], list[int] | None] | None = None

    def figure(self, which: int | Projection = 0, norm: str = "percentile", title: str | None = None):
        """Input | projection | overlay side by side, as a PIL image (the CLI's ``_figure.png``)."""
        from cnncli.api.project_files import default_title, figure_of

        p = which if isinstance(which, Projection) else self[which]
        box = self.box_of(p) if self.box_of is not None else None  # --keep max: the unit's receptive field
        return figure_of(p, self.pixels, norm, title or default_title(self.meta, p.channel), box)

    def document(self):
        from cnncli.render import Document

        m = self.meta
        title = f"{m['model']} · {m['tensor']} · {m['mode']} (keep {m['keep']}) on {m['provider']}"
        if "attribution" in m:
            title = f"{m['model']} · {m['tensor']} · {m['attribution']['method']} on {m['provider']}"
        row_type = AttributionRow if "attribution" in m else ProjectionRow
        return Document(rows=self.rows, row_type=row_type, rows_key="results", meta=m, title=title,
                        files={"contact_sheet": m.get("contact_sheet")})

    def _repr_html_(self) -> str:
        import html

        m = self.meta
        if "attribution" in m:  # the renderer's own table of the AttributionRows
            return super()._repr_html_()
        head = html.escape(f"{m['model']} · {m['tensor']} · {m['mode']} (keep {m['keep']})")
        rows = "".join(f"<tr><td>{r.channel}</td><td>{r.max_activation:.4g}</td><td>{html.escape(str(r.location))}</td></tr>"
                       for r in self.rows)
        return (f"<p>{head}</p><table><thead><tr><th>channel</th><th>max activation</th><th>location [y,x]</th>"
                f"</tr></thead><tbody>{rows}</tbody></table>")


@dataclass
class ProjectionJob:
    """Everything a projection run needs, checked before any work. ``run()`` streams the results."""

    model: Any  # RunnableModel
    target: Any  # Target
    image: Any  # ImageInput
    channels: list[int] | str  # a list, or 'top' (chosen by strength after the forward run)
    top: int | None
    options: ProjectOptions
    projector: Any  # Projector
    meta: dict[str, Any] = field(default_factory=dict)
    identity: tuple[str, ...] = ()  # the model's and the image's (cnncli.imaging.naming): in the file names

    @property
    def count(self) -> int:
        """How many projections ``run()`` yields."""
        return self.top if self.channels == "top" else len(self.channels)

    def run(self) -> Iterator[Projection]:
        if self.options.smooth is not None or self.options.integrated is not None:
            from cnncli.api.project_attr import attributions

            for c, score, loc, array, figures in attributions(self):
                yield Projection(c, score, loc, array, self.image.bgr, figures)
            return
        for r in self.projector.iter_project(self.image.x, self.channels, self.options.keep, self.top):
            yield Projection(r.channel, r.max_activation, r.location, r.projection, self.image.bgr)


def prepare(model: Any, image: Any, options: ProjectOptions) -> ProjectionJob:
    """Check and load everything for a projection; no projection runs yet."""
    from cnncli.api.sources import image_identity, model_identity, open_with_image, prepare_image
    from cnncli.engine.memory import reverse_batch
    from cnncli.engine.model_input import check_run_memory
    from cnncli.engine.project import Projector
    from cnncli.engine.targets import by_layer, by_tensor, parse_channels
    from cnncli.runtime.sessions import resolve_provider

    o = options
    provider = resolve_provider(o.provider)
    m, array = open_with_image(model, image, o.size, o.input_name)
    target = by_layer(m.graph, o.layer, "use --tensor NAME") if o.layer is not None else by_tensor(m.graph, o.tensor)
    if len(target.shape) < 2 or target.shape[1] is None:  # found by tests/test_fuzz.py
        raise CnnError(f"the shape of '{target.tensor}' is unknown (shape inference cannot follow the model there)")
    top = o.top
    if o.channels is None and top is None:
        top = min(DEFAULT_TOP, target.shape[1])
    elif top is not None and o.channels is None and top > target.shape[1] >= 1:
        import warnings

        from cnncli.errors import CnnWarning

        warnings.warn(CnnWarning(f"--top {top}: '{target.tensor}' has {target.shape[1]} channels; projecting all "
                                 f"{target.shape[1]}"), stacklevel=2)
        top = target.shape[1]
    chans = parse_channels(o.channels, top, target.shape[1])
    count = top if chans == "top" else len(chans)
    batch = o.batch_size if o.batch_size is not None else reverse_batch(m.graph, m.input_name, target.tensor, count,
                                                                         o.max_memory)
    check_run_memory(m, target.tensor, 1, min(count, batch), o.max_memory)
    img = prepare_image(m, image, array, o.preset, o.mean, o.std, o.bgr)
    projector = Projector(m.model, m.graph, m.input_name, target.tensor, o.mode, provider, o.verbose, batch)
    meta = {"model": m.name, "input": img.name, "tensor": target.tensor, "layer": target.layer, "mode": o.mode,
            "keep": o.keep, "provider": provider, "preprocess": img.preprocess}
    return ProjectionJob(m, target, img, chans, top, o, projector, meta, (model_identity(model, m), image_identity(image)))


def run(model: Any, image: Any, options: ProjectOptions, *, progress: Callable[..., None] | None = None,
        on_warning: Hear | None = None, arrays: bool = True) -> Projections:
    """Project feature maps of ``image`` through ``model``; with ``options.out`` the files of
    ``cnn project`` are written there as each projection comes. ``progress(n, total=...)`` is
    called once with n=0 and the number of projections, then with n=1 after each.
    ``arrays=False`` keeps no projection arrays (memory flat in the number of channels)."""
    from pathlib import Path

    from cnncli.api.project_files import ProjectionWriter, rf_box_of, write_streamed
    from cnncli.atomic import check_writable_dir
    from cnncli.frontend.damage import damage_explained

    o = options
    warnings = Warnings(on_warning)
    with damage_explained(), warnings.capturing():  # a crash on a damaged model file: its one-line error
        if o.out is not None:
            check_writable_dir(Path(o.out))
        if o.export_reverse:
            check_writable_dir(Path(o.export_reverse).parent, "--export-reverse file")
        job = prepare(model, image, o)
        writer = ProjectionWriter(job, o.out) if o.out is not None else None
        if progress:
            progress(0, total=job.count)
        items, rows = [], []

        def done(p: Projection, files: dict[str, str]) -> None:
            rows.append(ProjectionRow(p.channel, p.activation, p.location, files) if p.figures is None
                        else AttributionRow(channel=p.channel, **p.figures, files=files))
            if arrays:
                items.append(p)
            if progress:
                progress(1)

        if writer is None:
            for p in job.run():
                done(p, {})
        else:
            write_streamed(job, writer, done)
        job.meta["contact_sheet"] = writer.contact_sheet(rows) if writer is not None else None  # every channel
        if o.export_reverse:
            from cnncli.atomic import write_bytes_atomic

            projector = job.projector
            write_bytes_atomic(o.export_reverse, projector.reverse_model(projector.last_forward).SerializeToString())
    result = Projections(items, job.meta, job.image.pixels, rows, list(warnings))
    result.box_of = writer.box if writer is not None else rf_box_of(job)
    if job.meta.get("contact_sheet"):
        result.files.append(job.meta["contact_sheet"])
    if o.export_reverse:
        result.files.append(o.export_reverse)
    return result


def project(model: Any, image: Any, **options: Any) -> Projections:
    """Project feature maps of one image back to pixels (Zeiler & Fergus deconvnet; ``mode`` may
    also be 'backprop' or 'guided'); the options of ``cnn project``.

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
    return run(model, image, ProjectOptions.from_kwargs(options))
