"""Per-layer costs from Python: ``cnncli.stats(model)`` (what ``cnn stats`` prints)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Mapping

# the columns of the notebook table: the compact set that a person reads first
HTML_COLUMNS = (("index", "#"), ("name", "name"), ("op", "op"), ("output_shape", "output"), ("macs", "MACs"),
                ("params", "params"), ("cpr", "CPR"), ("rf", "RF"))


@dataclass
class Stats:
    """Costs of a model: ``layers`` (one LayerRow per layer, as ``cnn stats`` rows), ``totals``
    (macs, flops, params, …), the ``inputs`` as analysed, and ``unknown_ops`` (op types without a
    cost rule) and ``missing_external`` (absent external-data files).

    >>> s.totals["macs"], s.layers[0].name  # doctest: +SKIP
    """

    model: str
    inputs: list[dict[str, Any]]
    layers: list
    totals: dict[str, Any]
    unknown_ops: list[str] = field(default_factory=list)
    missing_external: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The document ``cnn stats --format json`` prints: model, inputs, layers, totals."""
        from cnncli.render import to_json_value

        return {"model": self.model, "inputs": to_json_value(self.inputs),
                "layers": to_json_value(self.layers), "totals": to_json_value(self.totals)}

    def _repr_html_(self) -> str:
        """A table for Jupyter (every name escaped)."""
        from cnncli.render import cells, columns

        names = [f.name for f in columns(type(self.layers[0]))] if self.layers else []
        pick = [(names.index(key), head) for key, head in HTML_COLUMNS if key in names]
        out = [f"<p><b>{html.escape(self.model)}</b> ({html.escape(inputs_text(self.inputs))})</p>",
               "<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for _, h in pick) + "</tr></thead><tbody>"]
        for row in self.layers:
            cs = cells(row, human=False)
            out.append("<tr>" + "".join(f"<td>{html.escape(cs[i])}</td>" for i, _ in pick) + "</tr>")
        out.append("</tbody></table>")
        t = self.totals
        out.append(f"<p>{t.get('macs') or 0:,} MACs, {t.get('params') or 0:,} params, {t.get('flops') or 0:,} FLOPs"
                   + (" (incomplete: " + html.escape(", ".join(self.unknown_ops)) + ")" if self.unknown_ops else "")
                   + "</p>")
        return "\n".join(out)


def inputs_of(graph) -> list[dict[str, Any]]:
    """The analysed graph's inputs as the JSON report lists them (name, shape, dtype)."""
    return [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in graph.inputs]


def inputs_text(inputs: list[dict[str, Any]]) -> str:
    """'x 1x3x224x224, y 1x10' for a title."""
    return ", ".join(f"{i['name']} {'x'.join(map(str, i['shape']))}" for i in inputs)


def stats(model: Any, batch: int = 1, input_shapes: Mapping[str, Any] | None = None) -> Stats:
    """Per-layer MACs, params, CPR, activation memory and receptive field of ``model`` (a path,
    bytes or an onnx.ModelProto). ``batch`` fills a symbolic leading dim; ``input_shapes`` sets
    inputs, e.g. ``{"image": (1, 3, 224, 224)}`` or ``{"image": "1x3x224x224"}``.

    >>> import cnncli
    >>> cnncli.stats("sample_models/zfnet_paper.onnx").totals["params"]
    62357608
    """
    from cnncli.api.sources import load
    from cnncli.errors import BadArgument
    from cnncli.frontend.graph import analyse, parse_shape_text
    from cnncli.costs.stats import compute_stats
    from cnncli.frontend.damage import damage_explained

    with damage_explained():  # a crash on a damaged model file: its one-line error
        if batch < 1:
            raise BadArgument("--batch", f"must be at least 1, not {batch}")
        shapes = {}
        for name, shape in (input_shapes or {}).items():
            shapes[name] = parse_shape_text(shape) if isinstance(shape, str) else tuple(int(d) for d in shape)
        loaded = load(model)
        graph = analyse(loaded.model, batch=batch, input_shapes=shapes)
        result = compute_stats(graph)
        return Stats(loaded.name, inputs_of(graph), result.layers, result.totals, list(result.unknown_ops),
                     list(loaded.missing_external))
