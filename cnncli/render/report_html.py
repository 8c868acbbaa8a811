"""The page of `cnn report` (and `cnn demo`): one self-contained HTML file, no script, no external
style, no network; every picture a relative ``img/…`` file, lazy-loaded. Every text that comes
from the model or the images (node, tensor and file names, metadata) is escaped here, once."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Sequence

from cnncli.render.html import table_html

# the columns the page shows; headers, units and meanings are the rows' own (cnncli.columns.col)
STATS_COLUMNS = ("index", "name", "op", "output_shape", "macs", "params", "cpr", "act_bytes", "rf")
CONN_COLUMNS = ("index", "name", "output_shape", "full", "local", "shared", "local_over_shared")


@dataclass
class Picture:
    """An image file of the page: ``src`` relative to the page, its pixel size, what it shows."""

    src: str
    width: int
    height: int
    alt: str
    shown: int | None = None  # displayed longer side in CSS px (None: its own size)


@dataclass
class Unit:
    """One of a channel's top k: where in which image, and its two pictures."""

    image: str
    activation: float
    location: list[int]
    box: list[int]  # [y0, x0, y1, x1) in input pixels
    projection: Picture | None  # None where no projection can be made (a QLinearConv on the way back)
    patch: Picture


@dataclass
class ChannelView:
    channel: int
    best: float
    units: list[Unit]
    map: Picture | None = None  # the whole map projected on the best image
    map_input: Picture | None = None  # that image


@dataclass
class LayerView:
    layer: int
    name: str
    tensor: str
    shape: list
    rf: list | None
    macs: int | None
    params: int | None
    filters: Picture | None
    filters_note: str
    channels: list[ChannelView]
    n_channels: int
    no_projection: str = ""  # why the layer's units are not projected (empty: they are)


@dataclass
class ImageView:
    name: str
    input: Picture
    per_layer: dict[int, list[tuple[int, float, Picture]]] = field(default_factory=dict)
    class_maps: list[tuple[str, float, Picture]] = field(default_factory=list)


@dataclass
class PageView:
    title: str
    intro: str  # HTML the caller wrote (its own names escaped)
    settings: list[tuple[str, str]]  # (what, value), shown as a labelled list
    stats_rows: list
    stats_type: type
    totals: dict
    conn_rows: list
    conn_type: type | None
    plot: Picture | None
    layers: list[LayerView]
    images: list[ImageView]
    k: int
    mode: str
    top: int
    notes: list[str] = field(default_factory=list)  # plain text, escaped here
    class_maps: str = ""  # what the class maps are (plain text), "" when there are none


_STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1240px;color:#222;padding:0 16px 40px;line-height:1.4}
h1{font-size:24px}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:2em}h3{margin:1.2em 0 .3em}
table{border-collapse:collapse;font-size:12px;margin:.6em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;vertical-align:top}th{background:#f3f3f3}
table.data td:nth-child(2),table.data td:nth-child(3){text-align:left;max-width:26em;overflow-wrap:anywhere}
dl.legend{font-size:12px;color:#444;display:grid;grid-template-columns:max-content 1fr;gap:1px 12px;margin:.4em 0}
dl.legend dt{font-weight:600}dl.legend dd{margin:0}
nav ol{columns:3;font-size:13px}.note{color:#555;max-width:62em;font-size:14px}
img{image-rendering:pixelated;background:#eee}
.channels{display:flex;flex-wrap:wrap;gap:14px}
.channel{border:1px solid #ddd;border-radius:4px;padding:6px;font-size:11px}
.channel h4{margin:0 0 4px;font-size:12px}
.channel table{margin:0;font-size:10px}.channel td{border:none;padding:1px;text-align:center}
.pair{display:flex;gap:4px;align-items:flex-start;margin-top:4px}
figure{margin:0;text-align:center;font-size:11px;color:#555}figure.left{text-align:left}figure.left img{margin:0}figure.plot img{image-rendering:auto}
.row{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start;margin:.3em 0 .9em}
figure img{display:block;margin:0 auto}
code{font-size:90%}
"""


def e(text: object) -> str:
    """Text from the model, the images or the user, as HTML (quotes too: safe in attributes)."""
    return html.escape(str(text), quote=True)


def img(p: Picture, shown: int | None = None) -> str:
    """An <img> that loads when scrolled to, its longer side ``shown`` CSS px (default: the
    picture's own ``shown``, else its size); src in single quotes (the page's own names)."""
    side = shown or p.shown or max(p.width, p.height)
    scale = side / max(p.width, p.height, 1)
    w, h = max(1, round(p.width * scale)), max(1, round(p.height * scale))
    return (f"<img src='{e(p.src)}' width='{w}' height='{h}' loading='lazy' decoding='async' "
            f"alt='{e(p.alt)}' title='{e(p.alt)}'>")


def _shape(dims: Sequence | None) -> str:
    return "×".join("?" if d is None else str(d) for d in dims) if dims else "?"


def _num(v: object) -> str:
    return f"{v:,}" if isinstance(v, int) else ("?" if v is None else str(v))


def _legend(columns: Sequence[tuple[str, str, str]]) -> str:
    return "<dl class='legend'>" + "".join(f"<dt>{e(h)}</dt><dd>{e(m)}</dd>" for _, h, m in columns) + "</dl>"


def _table(rows: list, row_type: type, names: Sequence[str]) -> str:
    from cnncli.columns import described

    picked = described(row_type, names)
    table = table_html(rows, row_type, [c[0] for c in picked], [c[1] for c in picked])
    return table.replace("<table>", "<table class='data'>", 1) + _legend(picked)


def _totals(t: dict) -> str:
    items = [("MACs (multiply-accumulates per image)", t.get("macs")), ("FLOPs (2 × MACs + other ops)", t.get("flops")),
             ("params (learned scalars)", t.get("params")), ("layers", t.get("layers")), ("conv layers", t.get("convs"))]
    largest = t.get("largest_activation")
    if largest:
        items.append((f"largest activation (bytes, {largest['name']})", largest["bytes"]))
    cells = "".join(f"<tr><th>{e(k)}</th><td>{e(_num(v))}</td></tr>" for k, v in items)
    incomplete = " (incomplete: ops without a cost rule: " + e(", ".join(t.get("unknown_ops") or [])) + ")" \
        if t.get("incomplete") else ""
    return f"<h3>Totals{incomplete}</h3><table class='totals'>{cells}</table>"


def _toc(v: PageView) -> str:
    items = ["<li><a href='#costs'>Cost per layer</a></li>"]
    if v.conn_rows:
        items.append("<li><a href='#connectivity'>Connectivity</a></li>")
    for lv in v.layers:
        items.append(f"<li><a href='#layer-{lv.layer}'>Layer {lv.layer}: {e(lv.name)}</a></li>")
    if v.images:
        items.append("<li><a href='#images'>Per image</a></li>")
    return "<nav><h2>Contents</h2><ol>" + "".join(items) + "</ol></nav>"


def _channel(lv: LayerView, ch: ChannelView, k: int, mode: str) -> str:
    head = f"<h4>channel {ch.channel} · best activation {ch.best:.4g}</h4>"
    cells_p = "".join(f"<td>{img(u.projection)}</td>" for u in ch.units if u.projection is not None)
    cells_i = "".join(f"<td>{img(u.patch)}</td>" for u in ch.units)
    labels = "".join(f"<td>#{i + 1} {e(u.image)}<br>act {u.activation:.3g}<br>at [{u.location[0]},{u.location[1]}]</td>"
                     for i, u in enumerate(ch.units))
    row_p = f"<tr><th>{e(mode)}</th>{cells_p}</tr>" if cells_p else ""
    grid = f"<table>{row_p}<tr><th>image RF</th>{cells_i}</tr><tr><th></th>{labels}</tr></table>"
    pair = ""
    if ch.map is not None and ch.map_input is not None:
        pair = (f"<div class='pair'><figure>{img(ch.map_input)}best image: {e(ch.units[0].image)}</figure>"
                f"<figure>{img(ch.map)}its whole map, {e(mode)}</figure></div>")
    return f"<div class='channel'>{head}{grid}{pair}</div>"


def _layer(lv: LayerView, v: PageView) -> str:
    rf = f"{_shape(lv.rf)} px" if lv.rf else "unknown"
    facts = (f"<p class='note'>Output tensor <code>{e(lv.tensor)}</code>, shape (N×C×H×W) {e(_shape(lv.shape))}; "
             f"receptive field {e(rf)}; {e(_num(lv.macs))} MACs; {e(_num(lv.params))} params.</p>")
    parts = [f"<section id='layer-{lv.layer}'><h2>Layer {lv.layer}: {e(lv.name)}</h2>", facts, "<h3>Filters</h3>"]
    if lv.filters is not None:
        parts.append(f"<figure class='left'>{img(lv.filters)}</figure><p class='note'>{e(lv.filters_note)}</p>")
    else:
        parts.append(f"<p class='note'>{e(lv.filters_note)}</p>")
    shown = len(lv.channels)
    parts.append(f"<h3 id='layer-{lv.layer}-channels'>Strongest channels ({shown} of {lv.n_channels}, top {v.k} "
                 "images each)</h3>"
                 "<p class='note'>Channels ordered by their largest activation over the images. Per channel, its "
                 f"top {v.k} activations: the unit projected alone back to pixels ({e(v.mode)}), cropped to its "
                 "receptive field, above the same crop of the image; <i>act</i> is the activation (the layer's output "
                 "value, no unit), <i>at [y,x]</i> its position in the feature map. Below, the channel's whole feature "
                 "map on its best image projected back to pixels. Grey is zero; light and dark the signed pattern that "
                 "drives the channel (scaled to the 99.5th percentile of its magnitude).</p>")
    if lv.no_projection:
        parts.append(f"<p class='note'>Not projected: {e(lv.no_projection)}.</p>")
    parts.append("<div class='channels'>" + "".join(_channel(lv, ch, v.k, v.mode) for ch in lv.channels) + "</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _image(iv: ImageView, v: PageView) -> str:
    parts = [f"<h3 id='image-{e(iv.name)}'>{e(iv.name)}</h3><div class='row'><figure>{img(iv.input)}input</figure>"]
    for label, score, pic in iv.class_maps:
        parts.append(f"<figure>{img(pic)}class {e(label)} · score {score:.3g}</figure>")
    parts.append("</div>")
    for layer, cells in iv.per_layer.items():
        parts.append(f"<div class='row'><figure style='width:60px'><b>layer {layer}</b></figure>")
        for ch, act, pic in cells:
            parts.append(f"<figure>{img(pic)}ch {ch} · act {act:.3g}</figure>")
        parts.append("</div>")
    return "\n".join(parts)


def page(v: PageView) -> str:
    """The whole page, as text: every name escaped for HTML, and line by line for people
    (cnncli.escaping.visible: control and bidi characters, and the undecodable bytes of a file
    name, as escapes such as ``\\e``, ``\\u202e``, ``\\udcff``; markup is HTML's to escape)."""
    from cnncli.escaping import visible

    return "\n".join(visible(line) for line in _page(v).split("\n"))


def _page(v: PageView) -> str:
    settings = "".join(f"<dt>{e(k)}</dt><dd>{e(val)}</dd>" for k, val in v.settings)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{e(v.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(v.title)}</h1>", v.intro,
        f"<dl class='legend'>{settings}</dl>",
        "".join(f"<p class='note'>Note: {e(n)}</p>" for n in v.notes),
        _toc(v),
        "<section id='costs'><h2>Cost per layer</h2>",
        _table(v.stats_rows, v.stats_type, STATS_COLUMNS),
        _totals(v.totals),
    ]
    if v.plot is not None:
        fit = min(1.0, 1200 / max(v.plot.width, 1))  # at most the page's width
        parts.append(f"<figure class='left plot'>{img(v.plot, round(max(v.plot.width, v.plot.height) * fit))}</figure>")
    parts.append("</section>")
    if v.conn_rows and v.conn_type is not None:
        parts += ["<section id='connectivity'><h2>Connectivity</h2><p class='note'>Weights each conv layer would need "
                  "fully connected, locally connected (one unshared window per output unit) and with shared weights "
                  "(per image; biases excluded).</p>", _table(v.conn_rows, v.conn_type, CONN_COLUMNS), "</section>"]
    parts += [_layer(lv, v) for lv in v.layers]
    if v.images:
        what = (f"its {v.top} strongest feature maps of each layer projected back to pixels ({e(v.mode)}, the whole "
                "map; <i>act</i>: the map's largest activation)" if v.top else "")
        cams = f", its {e(v.class_maps)}" if v.class_maps else ""
        parts.append(f"<section id='images'><h2>Per image</h2><p class='note'>Each image as the model sees it{cams}"
                     + (f"; then {what}" if what else "") + ".</p>")
        parts += [_image(iv, v) for iv in v.images]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
