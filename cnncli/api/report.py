"""`cnn report MODEL IMAGES --out DIR` / ``cnncli.report(model, "photos/", out="rep")``: one
self-contained HTML page for any model: the stats table with its totals and the cost plot, the
connectivity table, and per conv layer its filters, its strongest channels over IMAGES (each
channel's top k with their receptive-field patches, as `cnn top`) and a deconvnet projection of
each channel's whole map; per image, optionally, its own strongest maps (`cnn demo`'s gallery).

One forward pass per batch of images serves every layer (cnncli.engine.top.scan_tensors). The page
(cnncli.render.report_html) and its pictures (``img/*.png``) go into ``out``; a run replaces its
own earlier files there and nothing else (cnncli.api.report_files).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cnncli.api.options import ImageOptions, channel_list, choice, count_or_all, integer, opt, path
from cnncli.api.report_files import MANIFEST, Pictures, chosen_layers
from cnncli.api.result import Hear, Result, Warnings
from cnncli.choices import MODES
from cnncli.columns import col
from cnncli.errors import BadArgument, CnnError, UnsupportedError

NORM = "percentile"  # how the page's projections are scaled (a deep layer's are faint with 'grey')
TILE = 64  # displayed width of a top-k tile, CSS px (the crops are the receptive field's own size)
SHOWN = 128  # displayed width of a whole image or projection, CSS px


@dataclass(frozen=True, kw_only=True)
class ReportOptions(ImageOptions):
    out: str = opt("cnn-report", "--out", path(optional=False))
    layers: str | None = opt(None, "--layers", channel_list)  # '1,3,5' or 'all' (a list in Python); None: all
    k: int = opt(4, "-k", integer(1))
    channels: int | str = opt(8, "--channels", count_or_all)  # the N strongest channels per layer, or 'all'
    top: int = opt(0, "--top", integer(0))  # per image, its N strongest maps of each layer (0: none)
    per_image: int = opt(16, "--per-image", integer(0))  # the first N images get a section (input, class maps, top maps)
    mode: str = opt("deconvnet", "--mode", choice(MODES))
    batch_size: int = opt(16, "--batch-size", integer(1))


@dataclass(frozen=True)
class ReportRow:
    layer: int = col("layer", "int")
    name: str = col("conv")
    tensor: str = col("tensor")
    output_shape: list | None = col("output", "shape")
    receptive_field: list | None = col("RF", "shape")
    channels: int = col("channels shown", "int")
    tiles: int = col("top-k projections", "int")
    projections: int = col("per-image projections", "int")


@dataclass(eq=False)
class Report(Result):
    """The page written: ``meta`` (model, images, scanned, skipped, page, k, mode), one ReportRow per
    layer shown in ``rows``, ``files`` (every file written) and ``warnings``."""

    meta: dict[str, Any]
    rows: list[ReportRow]
    files: list[str]
    warnings: list[str] = field(default_factory=list)

    def document(self):
        from cnncli.render import Document

        m = self.meta
        return Document(rows=self.rows, row_type=ReportRow, rows_key="layers", meta=m,
                        title=f"{m['model']} · {m['scanned']} images · page {m['page']}")


def run(model: Any, images: Any, options: ReportOptions, *, stdin=None, progress: Callable[[str], None] | None = None,
        on_warning: Hear | None = None, manifest: str = MANIFEST, title: str | None = None,
        intro: str | None = None, tick: Callable[..., None] | None = None) -> Report:
    """Write the report of ``model`` over ``images`` (a folder, a glob, a list file, '-' for paths
    on ``stdin``, or a list of paths) into ``options.out``; ``progress(text)`` hears each step and
    ``tick(n, total=...)`` the scan (once n=0 with the image count, then n=images read).
    ``title``/``intro`` (HTML, its own names escaped) replace the page's head (`cnn demo`)."""
    from cnncli.atomic import check_writable_dir
    from cnncli.frontend.damage import damage_explained

    o = options
    warnings = Warnings(on_warning)
    with damage_explained(), warnings.capturing():
        out = Path(o.out)
        check_writable_dir(out)
        if (out / "img").is_symlink():  # its pictures would replace files wherever the link leads
            raise CnnError(f"'{out / 'img'}' is a symbolic link: the report writes its pictures only into a folder "
                           "of its own")
        result = _Run(model, images, o, stdin, progress or (lambda _: None), warnings, tick).write(manifest, title,
                                                                                            intro)
    result.warnings = list(warnings)
    return result


class _Run:
    """One report: everything is checked and opened in ``__init__``, before any file is written."""

    def __init__(self, model, images, o: ReportOptions, stdin, say: Callable[[str], None], warnings: Warnings,
                 tick: Callable[..., None] | None = None):
        from cnncli.api.sources import load
        from cnncli.api.top_files import listed_paths
        from cnncli.engine.model_input import check_run_memory, model_preprocess, open_for_images
        from cnncli.engine.targets import by_layer, conv_nodes
        from cnncli.runtime.sessions import resolve_provider

        self.o, self.say, self.warnings, self.tick = o, say, warnings, tick
        self.provider = resolve_provider(o.provider)
        self.loaded = load(model)
        self.m = m = open_for_images(self.loaded, o.size, o.input_name)
        self.prep = model_preprocess(m, o.preset, o.mean, o.std, o.bgr)
        self.targets = []
        for layer in chosen_layers(o.layers, len(conv_nodes(m.graph))):
            t = by_layer(m.graph, layer)
            if len(t.shape) != 4 or t.shape[1] is None:
                warnings.add(f"layer {layer}'s output '{t.tensor}' is not a 4-D feature map; it is left out")
                continue
            from cnncli.reverse import other_input

            if other_input(m.graph, m.input_name, t.tensor) is None:
                self.targets.append(t)
            else:
                warnings.add(f"layer {layer} depends on an input other than '{m.input_name}'; it is left out")
        if not self.targets:
            raise CnnError("no conv layer to show: none of those asked for gives a 4-D feature map of the image input")
        paths, self.images_label, _ = listed_paths(images, stdin)
        self.paths = list(paths)
        self.batch = max(1, min(o.batch_size if m.batchable else 1, len(self.paths) or 1))
        self.k = max(1, min(o.k, len(self.paths)))  # an image counts once per channel: -k past them adds nothing
        check_run_memory(m, self.targets[-1].tensor, self.batch, min(self.batch, self.k), o.max_memory)
        from cnncli.engine.memory import check_memory, topk_bytes

        n = sum(t.shape[1] for t in self.targets)
        try:
            check_memory(topk_bytes(n, self.k, self.batch), o.max_memory, f"keeping the top {self.k} of {n} channels",
                         "a smaller -k, or fewer --layers")
        except CnnError as exc:
            raise BadArgument("-k", str(exc)) from None
        self.out = Path(o.out)
        self.cam_meta: dict | None = None

    def write(self, manifest: str, title: str | None, intro: str | None) -> Report:
        from cnncli.api.report_files import check_own_pages, read_manifest, replace_manifest
        from cnncli.atomic import write_bytes_atomic
        from cnncli.render.report_html import PageView, page

        previous = read_manifest(self.out, manifest)
        check_own_pages(self.out, previous)
        pics = Pictures(self.out)
        stats, conn, plot = self.costs(pics)
        tops, scanned, skipped = self.scan()
        rows, layer_views, galleries = [], [], {}
        for t in self.targets:
            view, row = self.layer(t, tops[t.tensor], stats, pics, galleries)
            layer_views.append(view)
            rows.append(row)
        images = self.image_views(galleries, pics)
        o, m = self.o, self.m
        settings = [("model", m.name), ("images", f"{self.images_label} ({scanned} read, {len(skipped)} skipped)"),
                     ("input (C×H×W)", "×".join(map(str, m.shape[1:]))),
                     ("preprocessing", ", ".join(f"{k} {v}" for k, v in self.prep.describe().items())),
                     ("projection mode", o.mode), ("top-k images per channel (-k)", str(self.k)),
                     ("channels per layer (--channels)", str(o.channels))]
        view = PageView(title or f"cnn report: {Path(m.name).name}", intro or _INTRO, settings, stats.layers,
                        type(stats.layers[0]) if stats.layers else object, stats.totals, conn,
                        type(conn[0]) if conn else None, plot, layer_views, images, self.k, o.mode, o.top,
                        list(self.warnings), self._cam_note())
        index = self.out / "index.html"
        write_bytes_atomic(index, page(view).encode("utf-8"))
        files = pics.files + [str(index), str(self._stats_json(stats))]
        replace_manifest(self.out, previous, files, manifest)
        meta = {"model": m.name, "images": self.images_label, "scanned": scanned, "skipped": len(skipped),
                "page": str(index), "k": self.k, "mode": o.mode}
        return Report(meta, rows, files)

    def _cam_note(self) -> str:
        c = self.cam_meta
        if not c:
            return ""
        where = f"layer {c['layer']} ({c['tensor']})" if c.get("layer") is not None else c["tensor"]
        return (f"class activation maps ({c['method']} at {where}, `cnn cam`) of its {CAM_TOP} highest-scoring "
                f"classes of '{c['score']}', over the image (red: where the class's score comes from; score: the "
                "model's output value for that class)")

    # ------------------------------------------------------------------ steps
    def costs(self, pics: Pictures):
        from cnncli.costs.connectivity import model_connectivity
        from cnncli.costs.stats import compute_stats
        from cnncli.render.plot import stats_figure

        self.say("costs: stats, connectivity and the cost plot")
        stats = compute_stats(self.m.graph)
        self.warnings.add(stats.warning())
        conn = model_connectivity(self.m.graph)
        plot = None
        if any((r.macs or 0) > 0 or (r.params or 0) > 0 for r in stats.layers):
            plot = pics.plot(stats_figure(stats.layers, title=Path(self.m.name).name), "cost.png",
                             "MACs and params per layer (log scale), and CPR")
        return stats, conn, plot

    def _stats_json(self, stats) -> Path:
        import json

        from cnncli.atomic import write_bytes_atomic
        from cnncli.render import to_json_value

        doc = {"layers": to_json_value(stats.layers), "totals": to_json_value(stats.totals)}
        return write_bytes_atomic(self.out / "stats.json", json.dumps(doc, indent=1).encode())

    def loader(self):
        from cnncli.engine.model_input import image_loader

        return image_loader(self.m, self.prep)

    def scan(self):
        from cnncli.engine.project import forward_model
        from cnncli.engine.top import scan_tensors
        from cnncli.runtime.sessions import make_session

        m, tensors = self.m, list(dict.fromkeys(t.tensor for t in self.targets))
        self.say(f"scanning {len(self.paths)} image(s) through {len(tensors)} layer(s)")
        session = make_session(forward_model(m.model, tensors, {}, m.graph.types).SerializeToString(), self.provider,
                               self.o.verbose)
        load = self.loader()
        every = {t.tensor: list(range(t.shape[1])) for t in self.targets}
        if self.tick:
            self.tick(0, total=len(self.paths))
        tops, scanned, skipped = scan_tensors(session, m.input_name, every, self.paths, lambda p: load(p)[1], self.k,
                                              self.batch, self.tick)
        if scanned == 0:
            from cnncli.imaging.sources import skipped_text

            raise CnnError(f"no readable images in '{self.images_label}'"
                           + (f": {len(skipped)} skipped: {skipped_text(skipped, load.failures)}" if skipped else ""))
        if skipped:
            names = ", ".join(skipped[:3]) + (", …" if len(skipped) > 3 else "")
            self.warnings.add(f"skipped {len(skipped)} unreadable image(s): {names}")
        self.good = [p for p in self.paths if p not in set(skipped)]
        from cnncli.api.report_files import image_names

        self.names = image_names(self.good)
        self.inputs: dict[str, Any] = {}
        return tops, scanned, skipped

    def input_picture(self, path: str, pics: Pictures):
        """The image as the model sees it, written once."""
        if path not in self.inputs:
            from cnncli.imaging.preprocess import display_pixels

            raw = self.loader()(path)[0]
            self.inputs[path] = pics.save(display_pixels(raw), f"{self.names[path]}_input.png", _label(path), SHOWN)
        return self.inputs[path]

    def filters(self, layer: int, pics: Pictures):
        from cnncli.api.filters import FiltersOptions, run

        try:
            f = run(self.loaded, FiltersOptions(layer=layer))
        except CnnError as exc:
            return None, f"not drawn: {exc}"
        shape = "×".join(map(str, f.meta["weight_shape"]))
        note = (f"{len(f.rows)} filters, weights {shape} (output channels × input channels × kernel height × width); "
                + ("in colour (RGB input). " if f.meta["rgb"] else "each filter's input-channel slice with the most "
                   "energy, in grey. ") + "Each filter scaled to its own peak; mid-grey is 0.")
        pic = pics.save(f.montage, f"l{layer}_filters.png", f"layer {layer} filters", min(f.montage.shape[1], 480))
        return pic, note

    def layer(self, t, top, stats, pics: Pictures, galleries: dict):
        import numpy as np

        from cnncli.api.top import project_entries
        from cnncli.costs.receptive import receptive_fields
        from cnncli.engine.project import Projector
        from cnncli.imaging.pictures import to_display
        from cnncli.render.report_html import ChannelView, LayerView, Unit

        o, m, L = self.o, self.m, t.layer
        self.say(f"layer {L}: filters, top {self.k} of the strongest channels, projections")
        filters, note = self.filters(L, pics)
        n = t.shape[1]
        best = top.values[:, 0]
        order = [int(c) for c in np.argsort(-best, kind="stable") if np.isfinite(best[c])]
        chosen = order if o.channels == "all" else order[:o.channels]
        rf = receptive_fields(m.graph).get(t.tensor)
        try:
            projector, why = Projector(m.model, m.graph, m.input_name, t.tensor, o.mode, self.provider, o.verbose,
                                       self.batch), ""
        except UnsupportedError as exc:  # the layer's costs, filters and top-k patches are still shown
            projector, why = None, str(exc)
            self.warnings.add(f"layer {L} is not projected: {why}")
        load = self.loader()
        channels, by_image = [], {}
        for c in chosen:
            ch = project_entries(projector, load, c, top.entries(c), rf, (m.shape[2], m.shape[3]), self.batch, self.prep.bgr)
            units = []
            for i, (entry, proj, patch) in enumerate(zip(ch.entries, ch.projections, ch.patches)):
                name = _label(entry.image)
                stem, alt = f"l{L}_c{c}_top{i + 1}", f"layer {L} channel {c}, #{i + 1}: {name}"
                shown = None if proj is None else pics.save(to_display(proj, NORM, self.prep.bgr),
                                                            f"{stem}_projection.png", alt, TILE)
                units.append(Unit(name, entry.activation, entry.location, entry.box, shown,
                                  pics.save(patch, f"{stem}_patch.png", alt + " (image)", TILE)))
            channels.append(ChannelView(c, ch.best, units))
            by_image.setdefault(ch.entries[0].image, []).append(channels[-1])
        for path, views in by_image.items() if projector is not None else ():  # each channel's whole map on its best image
            x = load(path)[1]
            for view, r in zip(views, projector.project(x, [v.channel for v in views], "map")):
                view.map_input = self.input_picture(path, pics)
                view.map = pics.save(to_display(r.projection, NORM, self.prep.bgr), f"l{L}_c{r.channel}_map.png",
                                     f"layer {L} channel {r.channel}: whole map on {_label(path)}", SHOWN)
        count = 0
        if o.top and projector is not None:
            for path in self.good[:o.per_image]:
                cells = []
                for r in projector.project(load(path)[1], "top", "map", min(o.top, n)):
                    f = f"{self.names[path]}_layer{L}_c{r.channel}.png"
                    pic = pics.save(to_display(r.projection, NORM, self.prep.bgr), f,
                                    f"{_label(path)}: layer {L} channel {r.channel}", SHOWN)
                    cells.append((r.channel, r.max_activation, pic))
                galleries.setdefault(path, {})[L] = cells
                count += len(cells)
        stat = next((r for r in stats.layers if r.index == L), None)
        view = LayerView(L, t.conv_node, t.tensor, list(t.shape), [a.size for a in rf] if rf else None,
                         stat.macs if stat else None, stat.params if stat else None, filters, note, channels, n, why)
        row = ReportRow(L, t.conv_node, t.tensor, list(t.shape), view.rf, len(channels),
                        sum(u.projection is not None for v in channels for u in v.units), count)
        return view, row

    def image_views(self, galleries: dict, pics: Pictures) -> list:
        from cnncli.render.report_html import ImageView

        shown = self.good[:self.o.per_image]
        maps = self.class_maps(shown, pics)
        if not (self.o.top or maps):
            return []
        return [ImageView(_label(p), self.input_picture(p, pics), galleries.get(p, {}), maps.get(p, []))
                for p in shown]

    def class_maps(self, paths: list[str], pics: Pictures) -> dict[str, list]:
        """Each image's class activation maps (`cnn cam`: Grad-CAM at its default layer) for its
        top classes, as overlays: {path: [(class label, score, Picture)]}; none (with a warning)
        where the model has no class scores `cnn cam` can read."""
        if not paths:
            return {}
        from cnncli.api.cam import CamOptions, run as cam
        from cnncli.api.cam_files import heat, overlaid

        o = self.o
        self.say(f"class maps of {len(paths)} images")
        options = dict(preset=o.preset, mean=o.mean, std=o.std, bgr=o.bgr, size=o.size, input_name=o.input_name,
                       provider=o.provider, verbose=o.verbose, max_memory=o.max_memory, batch_size=self.batch)
        try:
            try:
                found = cam(self.loaded, paths, CamOptions(top=CAM_TOP, **options))
            except BadArgument:  # fewer classes than CAM_TOP
                found = cam(self.loaded, paths, CamOptions(top=1, **options))
        except CnnError as exc:
            self.warnings.add(f"no class maps: {exc}")
            return {}
        self.cam_meta = found.meta
        out: dict[str, list] = {}
        for item in found:
            rank = len(out.setdefault(item.image, [])) + 1
            label = item.label if item.label is not None else str(item.unit)
            pic = pics.save(overlaid(item.pixels, heat(item.upsampled())), f"{self.names[item.image]}_cam{rank}.png",
                            f"{_label(item.image)}: class map of {label}", SHOWN)
            out[item.image].append((label, item.score, pic))
        return out


def _label(path: str) -> str:
    """How the page names an image: its file name (escaped by the page, as every name)."""
    return os.path.basename(path) or path


CAM_TOP = 3  # class maps per image: its 3 highest-scoring classes


_INTRO = ("<p class='note'>What each layer costs (<code>cnn stats</code>, <code>cnn connectivity</code>) and what "
          "each conv layer has learned: its filters (<code>cnn filters</code>), its strongest channels over the "
          "images with the receptive-field patches that drive them (<code>cnn top</code>), and each channel's "
          "whole feature map projected back to pixels (<code>cnn project</code>, the Zeiler &amp; Fergus "
          "deconvnet).</p>")


def report(model: Any, images: Any, **options: Any) -> Report:
    """The `cnn report` page of ``model`` over ``images`` (a folder, a glob, a list file, or a list
    of paths), written into ``out`` (default ``cnn-report``); the options of ``cnn report``:
    ``layers`` ([1, 3] or 'all'), ``k``, ``channels`` (a count or 'all'), ``top``, ``mode``, …

    >>> import cnncli
    >>> r = cnncli.report("sample_models/zfnet_mini.onnx", "sample_models/images", out="rep", layers=[1], k=2, channels=2)  # doctest: +SKIP
    """
    return run(model, images, ReportOptions.from_kwargs(options))
