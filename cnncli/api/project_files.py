"""The files of `cnn project` (and of ``cnncli.project(..., out=DIR)``): one writer, one naming.

Each projection is written as soon as it comes (PNG, figure, optional .npy; every file complete
or absent: atomic renames) and dropped, so memory does not grow with the number of channels.
File names carry the model, the input (its stem and a short hash of which model and image they
are: cnncli.imaging.naming), the target, the channel and every option that changes the pixels
(mode; keep, norm and preprocessing where not the default), so runs on other inputs or with other
options into one folder never replace each other's files. They are fixed, and their
length checked, before any work.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from cnncli.api.project import Projection, ProjectionJob


WRITERS = max(1, min(4, os.cpu_count() or 1))  # threads making and writing the pictures
WRITE_AHEAD = 2 * WRITERS  # projections waiting to be written, at most


def default_title(meta: dict, channel: int) -> str:
    """The title of a projection's figure."""
    label = f"layer{meta['layer']}" if meta["layer"] is not None else meta["tensor"]
    if "attribution" in meta:
        return f"{Path(meta['model']).name} · {label} · channel {channel} · {meta['attribution']['method']}"
    return f"{Path(meta['model']).name} · {label} · channel {channel} · {meta['mode']}, keep {meta['keep']}"


def figure_of(p: "Projection", pixels, norm: str, title: str, box=None, shown=None):
    """``shown``: the projection as p.to_uint8(norm) made it already (made here when None)."""
    from cnncli.imaging.figure import projection_figure

    return projection_figure(pixels, p.to_uint8(norm) if shown is None else shown, p.array, title, box)


def rf_box_of(job: "ProjectionJob"):
    """``box(projection)``: with ``--keep max``, the receptive field [y0, x0, y1, x1) in input
    pixels of the unit projected (clipped to the input), drawn on its figure; else None (a whole
    map's projection has no one field; a target whose field is unknown neither)."""
    if job.options.keep != "max" or len(job.target.shape) != 4:
        return lambda p: None
    from cnncli.costs.receptive import receptive_fields

    rf = receptive_fields(job.model.graph).get(job.target.tensor)
    if not rf or len(rf) != 2:
        return lambda p: None
    h, w = job.model.shape[2], job.model.shape[3]

    def box(p: "Projection"):
        if p.location is None:
            return None
        (y0, y1), (x0, x1) = rf[0].box(p.location[0], h), rf[1].box(p.location[1], w)
        return [y0, x0, y1, x1]

    return box


SHEET_TILE = 96  # pixels: a projection's tile on the contact sheet


def sheet_label(row) -> str:
    """A contact-sheet tile's label: the channel and its largest activation (an attribution
    row's score)."""
    value = getattr(row, "max_activation", getattr(row, "score", None))
    return f"c{row.channel}" + (f" {value:.3g}" if isinstance(value, (int, float)) else "")


class ProjectionWriter:
    """Writes each projection of a job under ``out_dir`` as the job's options say (norm, figure,
    .npy); names are fixed, and their length checked, at construction."""

    def __init__(self, job: ProjectionJob, out_dir: str | Path):
        from cnncli.atomic import check_writable_dir

        o = job.options
        self.job, self.out, self.norm, self.save_npy, self.figure = job, Path(out_dir), o.norm, o.save_npy, o.figure
        check_writable_dir(self.out)
        self.prefix = self._prefix(o.size is not None)
        widest = max(job.target.shape[1] - 1, 0)
        self.name_of(widest)  # the longest name this run can make: checked now, not after the work
        self._made_dir = False
        self.box = rf_box_of(job)
        self.thumbs: dict[int, object] = {}  # channel -> its tile on the contact sheet (small: 96 pixels)

    def _prefix(self, size_given: bool) -> str:
        from cnncli.api.project_attr import tag as attribution_tag
        from cnncli.imaging.naming import identified, join, part, slug, stem_of

        job, m = self.job, self.job.model
        tensor = job.target.tensor  # a name made safe ('a b' → 'a_b') keeps a hash of itself: 'a_b' is another tensor
        label = f"layer{job.target.layer}" if job.target.layer is not None else \
            part(tensor) if slug(tensor) == tensor else identified(part(tensor), tensor)
        tags = []
        if job.options.keep != "map":
            tags.append(f"keep-{job.options.keep}")
        if self.norm != type(job.options).default("norm"):
            tags.append(f"norm-{self.norm}")
        tags.append(attribution_tag(job.options))  # --smooth / --integrated and their settings
        tags.append(self._prep_tag())
        if size_given:
            tags.append(f"{m.shape[2]}x{m.shape[3]}")
        self._tags = join(*tags)
        return f"{stem_of(m.name, 'model')}_{identified(stem_of(job.image.name, 'input'), *job.identity)}_{label}"

    def _prep_tag(self) -> str:
        """'' for the model's own preprocessing; the preset's name, or a hash of the settings."""
        from cnncli.engine.model_input import model_preprocess
        from cnncli.imaging.naming import short_hash, slug

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
        from cnncli.imaging.naming import NAME_MAX, fits, join, part

        name = join(f"{self.prefix}_c{channel}_{self.job.options.mode}", self._tags)
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
        if self.figure and self.job.count > 1:  # (--no-figure: the projections alone, no sheet either)
            from cnncli.imaging.pictures import resize_tile

            self.thumbs[p.channel] = resize_tile(img, SHEET_TILE)
        if self.figure:
            figure = figure_of(p, self.job.image.pixels, self.norm, default_title(self.job.meta, p.channel),
                               self.box(p), img)
            files["figure"] = str(save_image(figure, f"{base}_figure.png"))
        if self.save_npy:
            files["npy"] = str(save_npy(p.array[None], f"{base}.npy"))
        return files


    def contact_sheet(self, rows: list) -> str | None:
        """Every channel's projection on one sheet, in the order of ``rows`` (ProjectionRow),
        each tile labelled with its channel and largest activation; its path (None for one
        channel). Named by the channels it shows, so another set does not replace it."""
        from cnncli.imaging.figure import save_image
        from cnncli.imaging.montage import labelled_grid, square_cols, titled
        from cnncli.escaping import visible
        from cnncli.imaging.naming import NAME_MAX, fits, join, part, short_hash

        shown = [r for r in rows if r.channel in self.thumbs]
        if len(shown) < 2:
            return None
        o = self.job.options
        label = f"layer {self.job.target.layer}" if self.job.target.layer is not None else self.job.target.tensor
        sheet = labelled_grid([self.thumbs[r.channel] for r in shown], [sheet_label(r) for r in shown],
                              square_cols(len(shown)), SHEET_TILE, gap=6)
        sheet = titled(sheet, f"{visible(label)} · {len(shown)} channels · {o.mode}, keep {o.keep}, norm {self.norm} "
                              f"· each tile: channel, {'max activation' if hasattr(shown[0], 'max_activation') else 'score'}")
        chosen = short_hash(",".join(str(r.channel) for r in shown))
        name = join(f"{self.prefix}_{o.mode}", self._tags, f"sheet-{chosen}")
        if not fits(name + ".png"):
            name = part(name, limit=NAME_MAX - len(".png"))
        return str(save_image(sheet, self.out / f"{name}.png"))


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
