"""`cnn project` as a library call: the Python API's projection (cnncli.api.project) plus files.

Each projection is written as soon as it comes (PNG, figure, optional .npy; every file complete
or absent: atomic renames) and dropped, so memory does not grow with the number of channels.
File names carry the model, the input, the target, the channel and every option that changes the
pixels (mode; keep, norm and preprocessing where not the default), so runs on other inputs or
with other options into one folder never replace each other's files. They are fixed, and their
length checked, before any work.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cnncli.api.project import Projection, ProjectionJob, default_title, figure_of
from cnncli.render import col


WRITERS = max(1, min(4, os.cpu_count() or 1))  # threads making and writing the pictures
WRITE_AHEAD = 2 * WRITERS  # projections waiting to be written, at most


@dataclass(frozen=True)
class ProjectRequest:
    model: str
    input: str
    layer: int | None = None
    tensor: str | None = None
    channels: str | None = None  # "12", "3,5,12", "all"
    top: int | None = None
    mode: str = "deconvnet"
    keep: str = "map"
    preset: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    bgr: bool | None = None
    size: tuple[int, int] | None = None
    norm: str = "grey"
    out_dir: str = "cnn-out"
    save_npy: bool = False
    figure: bool = True  # the input | projection | overlay figure beside each projection
    export_reverse: str | None = None
    provider: str = "auto"
    input_name: str | None = None
    verbose: bool = False
    max_batch: int = 64
    max_memory: int | None = None  # bytes: the limit of the run's estimated memory [default: what is available]


@dataclass(frozen=True)
class ProjectionRow:
    channel: int = col("channel", "int")
    max_activation: float = col("max activation")
    location: list | None = col("location [y,x]", "dims")
    files: dict = col("files", "files")


@dataclass
class ProjectReport:
    meta: dict[str, Any]
    rows: list[ProjectionRow] = field(default_factory=list)


class ProjectionWriter:
    """Writes each projection of a job under ``out_dir``; names are fixed at construction."""

    def __init__(self, job: ProjectionJob, out_dir: str | Path, norm: str = "grey", save_npy: bool = False,
                 size_given: bool = False, figure: bool = True):
        from cnncli.atomic import check_writable_dir

        self.job, self.out, self.norm, self.save_npy, self.figure = job, Path(out_dir), norm, save_npy, figure
        check_writable_dir(self.out)
        self.prefix = self._prefix(size_given)
        widest = max(job.target.shape[1] - 1, 0)
        self.name_of(widest)  # the longest name this run can make: checked now, not after the work
        self._made_dir = False

    def _prefix(self, size_given: bool) -> str:
        from cnncli.commands.naming import join, part, stem_of

        job, m = self.job, self.job.model
        label = f"layer{job.target.layer}" if job.target.layer is not None else part(job.target.tensor)
        tags = []
        if job.keep != "map":
            tags.append(f"keep-{job.keep}")
        if self.norm != "grey":
            tags.append(f"norm-{self.norm}")
        tags.append(self._prep_tag())
        if size_given:
            tags.append(f"{m.shape[2]}x{m.shape[3]}")
        self._tags = join(*tags)
        return f"{stem_of(m.name, 'model')}_{stem_of(job.image.name, 'input')}_{label}"

    def _prep_tag(self) -> str:
        """'' for the model's own preprocessing; the preset's name, or a hash of the settings."""
        from cnncli.engine.model_input import model_preprocess
        from cnncli.commands.naming import short_hash, slug

        prep = self.job.image.prep
        if prep is None:
            return ""
        default = model_preprocess(self.job.model)
        if prep == default:
            return ""
        if prep.mean == default.mean and prep.std == default.std and prep.bgr != default.bgr:
            return "bgr" if prep.bgr else "rgb"
        base = prep.name.split("+")[0]
        from cnncli.imaging.preprocess import preset

        if prep == preset(base, self.job.model.shape[1]):
            return slug(base)
        return f"{slug(base)}-{short_hash(repr(prep.describe()), 6)}"

    def name_of(self, channel: int) -> str:
        """The base name (no suffix) of one channel's files."""
        from cnncli.commands.naming import NAME_MAX, fits, join, part

        name = join(f"{self.prefix}_c{channel}_{self.job.mode}", self._tags)
        if not fits(name + "_figure.png"):
            name = part(name, limit=NAME_MAX - len("_figure.png"))
        return name

    def write(self, p: Projection) -> dict[str, str]:
        from cnncli.atomic import ensure_dir
        from cnncli.imaging.figure import save_image
        from cnncli.imaging.pictures import save_npy

        if not self._made_dir:
            ensure_dir(self.out)
            self._made_dir = True
        base = self.out / self.name_of(p.channel)
        img = p.to_uint8(self.norm)
        files = {"png": str(save_image(img, f"{base}.png"))}
        if self.figure:
            figure = figure_of(p, self.job.image.pixels, self.norm, default_title(self.job.meta, p.channel))
            files["figure"] = str(save_image(figure, f"{base}_figure.png"))
        if self.save_npy:
            files["npy"] = str(save_npy(p.array[None], f"{base}.npy"))
        return files


def write_streamed(job: ProjectionJob, writer: ProjectionWriter,
                   done: Callable[[Projection, dict[str, str]], None]) -> None:
    """Write every projection of ``job``, calling ``done(projection, files)`` in channel order.

    Pictures are made and written on worker threads (Pillow and zlib release the GIL) while the
    next projections are computed; at most WRITE_AHEAD wait, so memory stays flat in the number of
    channels unless ``done`` keeps them."""
    with ThreadPoolExecutor(WRITERS, thread_name_prefix="cnncli-write") as pool:
        pending: deque = deque()
        for p in job.run():
            pending.append((p, pool.submit(writer.write, p)))
            del p
            while len(pending) > WRITE_AHEAD:
                p, files = pending.popleft()
                done(p, files.result())
        while pending:
            p, files = pending.popleft()
            done(p, files.result())


def run_project(req: ProjectRequest, progress: Callable[..., None] | None = None) -> ProjectReport:
    """``progress(n, total=...)`` is called once with n=0 and the number of projections, then
    with n=1 after each projection is written."""
    from cnncli.api.project import NORMS, _check, prepare
    from cnncli.atomic import check_writable_dir

    _check("norm", req.norm, NORMS)
    check_writable_dir(Path(req.out_dir))
    if req.export_reverse:
        check_writable_dir(Path(req.export_reverse).parent, "--export-reverse file")
    job = prepare(req.model, req.input, req.layer, req.tensor, req.channels, req.top, req.mode, req.keep,
                  req.preset, req.mean, req.std, req.bgr, req.size, req.input_name, req.provider, req.max_batch,
                  req.verbose, max_memory=req.max_memory)
    writer = ProjectionWriter(job, req.out_dir, req.norm, req.save_npy, size_given=req.size is not None,
                              figure=req.figure)
    if progress:
        progress(0, total=job.count)
    rows = []

    def done(p: Projection, files: dict[str, str]) -> None:
        rows.append(ProjectionRow(p.channel, p.activation, p.location, files))
        if progress:
            progress(1)

    write_streamed(job, writer, done)
    if req.export_reverse:
        from cnncli.atomic import write_bytes_atomic

        projector = job.projector
        write_bytes_atomic(req.export_reverse, projector.reverse_model(projector.last_forward).SerializeToString())
    return ProjectReport(job.meta, rows)
