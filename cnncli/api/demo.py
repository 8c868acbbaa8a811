"""`cnn demo`: stats, connectivity and deconvnet projections of the bundled trained network on the
bundled photographs, gathered into one self-contained ``index.html`` gallery."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cnncli.api.options import Options, choice, integer, opt, path
from cnncli.api.result import Hear, Result, Warnings
from cnncli.choices import PROVIDERS
from cnncli.columns import col


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


def read_manifest(out: Path) -> list[str]:
    """The files a previous demo run wrote into ``out`` (relative paths), [] when none or unreadable."""
    try:
        names = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def replace_manifest(out: Path, previous: list[str], files: list[str]) -> None:
    """Record this run's files, then remove the previous run's files this run did not write again:
    a run replaces its own outputs and never touches a file it did not make (the manifest names
    them; anything outside the folder, or not a plain file, is left alone)."""
    from cnncli.atomic import write_bytes_atomic

    root = out.resolve()
    now = sorted({str(Path(f).resolve().relative_to(root)) for f in files})
    write_bytes_atomic(out / MANIFEST, json.dumps(now, indent=0).encode("utf-8"))
    for name in set(previous) - set(now):
        p = out / name
        if Path(name).is_absolute() or ".." in Path(name).parts or p.is_symlink() or not p.is_file():
            continue
        try:
            p.unlink()
        except OSError:  # a stale picture that cannot be removed is not worth failing the run
            pass


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


