"""`cnn demo`: stats, connectivity and deconvnet projections of the bundled trained network on the
bundled photographs, gathered into one self-contained ``index.html`` gallery."""

from __future__ import annotations

import errno
import html
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cnncli.api.options import Options, choice, integer, opt, path
from cnncli.api.result import Hear, Result, Warnings
from cnncli.choices import PROVIDERS
from cnncli.columns import col
from cnncli.errors import CnnError


@dataclass(frozen=True)
class DemoRow:
    layer: int = col("layer", "int")
    tensor: str = col("tensor")
    receptive_field: list | None = col("RF", "shape")
    images: int = col("images", "int")
    projections: int = col("projections", "int")


@dataclass(frozen=True, kw_only=True)
class DemoOptions(Options):
    out: str = opt("cnn-demo", "--out", path(optional=False))
    top: int = opt(4, "--top", integer(1))
    provider: str = opt("auto", "--provider", choice(PROVIDERS))


@dataclass(eq=False)
class Demo(Result):
    model: str
    gallery: str
    rows: list[DemoRow]
    files: list[str]
    warnings: list[str] = field(default_factory=list)

    def document(self):
        from cnncli.render import Document

        return Document(rows=self.rows, row_type=DemoRow, meta={"model": self.model, "gallery": self.gallery},
                        title=f"cnncli demo: {self.model}", totals={"files": len(self.files), "gallery": self.gallery})


def _table_html(rows: list, columns: list[str], headers: list[str]) -> str:
    from cnncli.render.html import table_html

    return table_html(rows, type(rows[0]), columns, headers)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}
td:nth-child(2),td:nth-child(3){text-align:left}
.row{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start;margin:.4em 0 1.2em}
figure{margin:0;text-align:center;font-size:11px;color:#555}figure img{display:block;width:150px;height:150px;image-rendering:pixelated}
h3{margin-bottom:.2em}.note{color:#555;max-width:60em}
"""


def run(options: DemoOptions, *, progress: Callable[[str], None] | None = None,
        on_warning: Hear | None = None) -> Demo:
    """The demo into ``options.out``; ``progress(text)`` hears what it is doing."""
    warnings = Warnings(on_warning)
    with warnings.capturing():
        result = _run(options.out, options.top, options.provider, progress)
    result.warnings = list(warnings)
    return result


def _run(out_dir: str, top: int, provider: str, progress: Callable[[str], None] | None) -> Demo:
    from cnncli.atomic import check_writable_dir, ensure_dir, write_bytes_atomic
    from cnncli.bundled import sample_images, sample_model
    from cnncli.costs.connectivity import model_connectivity
    from cnncli.frontend.graph import analyse
    from cnncli.imaging.pictures import save_png, to_display
    from cnncli.api.sources import load
    from cnncli.render import to_json_value
    from cnncli.imaging.preprocess import make_preprocess, read_image, to_tensor
    from cnncli.engine.project import Projector
    from cnncli.costs.receptive import receptive_fields
    from cnncli.runtime.sessions import resolve_provider
    from cnncli.costs.stats import compute_stats
    from cnncli.engine.targets import by_layer, conv_nodes

    out = Path(out_dir)
    check_writable_dir(out)
    if (out / "img").is_symlink():  # its pictures would replace files wherever the link leads
        raise CnnError(f"'{out / 'img'}' is a symbolic link: the demo writes its pictures only into a folder of its own")
    provider = resolve_provider(provider)
    model_path = sample_model()
    loaded = load(str(model_path))
    model = loaded.model
    graph = analyse(model, batch=1)
    stats = compute_stats(graph)
    conn = model_connectivity(graph)
    spec = graph.inputs[0]
    h, w = spec.shape[2], spec.shape[3]
    labels = {p.key: p.value for p in model.metadata_props}
    prep = make_preprocess(spec.shape[1], labels.get("cnncli.preprocess", "imagenet"))
    images = sample_images()
    previous = read_manifest(out)
    ensure_dir(out / "img")
    fields = receptive_fields(graph)
    files: list[str] = []
    inputs = {}
    for path in images:
        raw = read_image(path, spec.shape[1], (h, w))
        name = path.stem
        files.append(str(save_png(raw if raw.shape[2] == 3 else raw[:, :, 0], out / "img" / f"{name}_input.png")))
        inputs[name] = (raw, to_tensor(raw, prep))
    gallery: dict[str, dict[int, list[tuple[int, float, str]]]] = {n: {} for n in inputs}
    rows = []
    n_layers = len(conv_nodes(graph))
    for layer in range(1, n_layers + 1):
        target = by_layer(graph, layer)
        if progress:
            progress(f"layer {layer}/{n_layers}: projecting {len(inputs)} images")
        projector = Projector(model, graph, spec.name, target.tensor, "deconvnet", provider)
        count = 0
        k = min(top, target.shape[1])
        for name, (raw, x) in inputs.items():
            results = projector.project(x, "top", "map", k)
            cells = []
            for r in results:
                f = out / "img" / f"{name}_layer{layer}_c{r.channel}.png"
                files.append(str(save_png(to_display(r.projection, "percentile", prep.bgr), f)))
                cells.append((r.channel, r.max_activation, f.name))
                count += 1
            gallery[name][layer] = cells
        rf = fields.get(target.tensor)
        rows.append(DemoRow(layer, target.tensor, [a.size for a in rf] if rf else None, len(inputs), count))
    index = out / "index.html"
    page = _page(model_path, stats, conn, rows, gallery, labels, prep)
    write_bytes_atomic(index, page.encode("utf-8"))
    files.append(str(index))
    write_bytes_atomic(out / "stats.json", json.dumps(
        {"layers": to_json_value(stats.layers), "totals": stats.totals}, indent=1).encode())
    files.append(str(out / "stats.json"))
    replace_manifest(out, previous, files)
    return Demo(str(model_path), str(index), rows, files)


MANIFEST = ".cnn-demo-files.json"  # what the last run wrote, relative to the folder
_OWN = re.compile(r"(?:img/[^/\\]+\.png|index\.html|stats\.json)")  # the only names the demo writes


def read_manifest(out: Path) -> list[str]:
    """The files a previous demo run wrote into ``out`` (relative paths); [] when there is none.
    A manifest that is a symlink, not JSON, or not a list of names is ignored with one warning
    (nothing is removed on its word)."""
    import warnings

    from cnncli.errors import CnnWarning

    path = out / MANIFEST
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return []
    except OSError as exc:  # ELOOP: the manifest is a symlink
        reason = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        warnings.warn(CnnWarning(f"ignoring '{path}' ({reason}): no previous demo file removed"))
        return []
    try:
        with os.fdopen(fd, "rb") as f:
            names = json.loads(f.read(1 << 20).decode("utf-8"))
    except (OSError, ValueError) as exc:
        names = exc
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        warnings.warn(CnnWarning(f"ignoring '{path}': not a list of file names; no previous demo file removed"))
        return []
    return names


def remove_own_file(out: Path, name: str) -> bool:
    """Remove ``out/name`` when it is one of the demo's own names (``index.html``, ``stats.json``,
    ``img/*.png``) and a regular file reached without leaving the folder: no absolute path, no
    ``..``, no symlink in any component (the folders are opened one by one without following
    links, and the file removed through them, so a link swapped in meanwhile cannot redirect it)."""
    import stat

    if not _OWN.fullmatch(name) or "\0" in name:
        return False
    *folders, leaf = name.split("/")
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
    fds = []
    try:
        fds.append(os.open(out, flags & ~getattr(os, "O_NOFOLLOW", 0)))  # --out itself may be a link the user made
        for folder in folders:
            fds.append(os.open(folder, flags, dir_fd=fds[-1]))
        if not stat.S_ISREG(os.stat(leaf, dir_fd=fds[-1], follow_symlinks=False).st_mode):
            return False
        os.unlink(leaf, dir_fd=fds[-1])
        return True
    except (OSError, NotImplementedError):  # gone, a link, not a folder, or no dir_fd here: left alone
        return False
    finally:
        for fd in reversed(fds):
            os.close(fd)


def replace_manifest(out: Path, previous: list[str], files: list[str]) -> None:
    """Record this run's files, then remove the previous run's files this run did not write again:
    a run replaces its own outputs and never touches a file it did not make (see
    :func:`remove_own_file` for what it removes)."""
    from cnncli.atomic import write_bytes_atomic

    now = sorted({Path(os.path.relpath(f, out)).as_posix() for f in files})  # as written: out/img/…, out/index.html
    write_bytes_atomic(out / MANIFEST, json.dumps(now, indent=0).encode("utf-8"))
    for name in sorted(set(previous) - set(now)):
        remove_own_file(out, name)


def _page(model_path: Path, stats, conn, rows, gallery, labels, prep) -> str:
    t = stats.totals
    classes = labels.get("cnncli.labels", "")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>cnncli demo</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>cnncli demo: {html.escape(model_path.name)}</h1>",
        "<p class='note'>A small network with the Zeiler &amp; Fergus (2013) layout, trained by "
        "<code>sample_models/train.py</code> on generated images"
        + (f" of {html.escape(classes.replace(',', ', '))}" if classes else "")
        + ". Below: what each layer costs (<code>cnn stats</code>, <code>cnn connectivity</code>), then, for each "
        "photograph, the strongest feature maps of every conv layer projected back to pixels with the deconvnet "
        "(<code>cnn project --mode deconvnet --top 4 --norm percentile</code>). Grey is zero; light and dark are the signed "
        "pixel pattern that drives the feature map. Early layers respond to edges and colour blobs, deeper "
        "layers to larger parts of the picture.</p>",
        f"<h2>Cost per layer</h2><p>Total: {t['macs']:,} MACs, {t['params']:,} parameters, "
        f"{t['flops']:,} FLOPs.</p>",
        _table_html(stats.layers, ["index", "name", "op", "output_shape", "macs", "params", "cpr", "rf"],
                    ["#", "name", "op", "output", "MACs", "params", "CPR", "RF"]),
        "<h2>Connectivity</h2><p class='note'>Weights each conv layer would need fully connected, locally "
        "connected (one unshared window per unit) and with shared weights.</p>",
        _table_html(conn, ["index", "name", "input_shape", "output_shape", "full", "local", "shared",
                           "local_over_shared"], ["#", "name", "input", "output", "full", "local", "shared", "local/shared"]),
        "<h2>Projections</h2>",
        _table_html(rows, ["layer", "tensor", "receptive_field", "projections"], ["layer", "tensor", "RF", "projections"]),
    ]
    for name, layers in gallery.items():
        parts.append(f"<h3>{html.escape(name)}</h3><div class='row'><figure><img src='img/{html.escape(name)}_input.png' "
                     f"alt='{html.escape(name)}'>input</figure></div>")
        for layer, cells in layers.items():
            parts.append(f"<div class='row'><figure style='width:60px'><b>layer {layer}</b></figure>")
            for ch, act, fname in cells:
                parts.append(f"<figure><img src='img/{html.escape(fname)}' alt='layer {layer} channel {ch}'>"
                             f"ch {ch} · {act:.3g}</figure>")
            parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


