"""`cnn stats` / ``cnncli.stats(model)``: per-layer MACs, params, CPR, activation memory and
receptive field, and the totals.

>>> import cnncli
>>> cnncli.stats("sample_models/zfnet_paper.onnx").totals["params"]
62357608
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from cnncli.api.options import ShapeOptions, choice, integer, opt, path, text
from cnncli.api.result import Hear, Result, Warnings
from cnncli.choices import GROUPINGS
from cnncli.errors import BadArgument

# the columns of the notebook table: the compact set that a person reads first
HTML_COLUMNS = (("index", "#"), ("name", "name"), ("op", "op"), ("output_shape", "output"), ("macs", "MACs"),
                ("params", "params"), ("cpr", "CPR"), ("rf", "RF"))


def row_type(by: str = "layer") -> type:
    """The rows `cnn stats --by` renders: LayerRow (one per layer) or OpRow (one per op type)."""
    from cnncli.costs.stats import LayerRow, OpRow

    return OpRow if by == "op" else LayerRow


def __getattr__(name: str):  # the row types, exported here without importing onnx with this module
    if name in ("LayerRow", "OpRow"):
        return row_type("op" if name == "OpRow" else "layer")
    raise AttributeError(name)


@dataclass(frozen=True, kw_only=True)
class StatsOptions(ShapeOptions):
    by: str = opt("layer", "--by", choice(GROUPINGS))
    sort: str | None = opt(None, "--sort", text())
    top: int | None = opt(None, "--top", integer(1, optional=True))
    plot: str | None = opt(None, "--plot", path())

    def validate(self) -> None:
        if self.sort is not None:
            from cnncli.costs.stats import sort_rows

            sort_rows([], row_type(self.by), self.sort)  # the column must exist
        if self.plot is not None and not self.plot.lower().endswith(".png"):
            raise BadArgument("--plot", f"'{self.plot}' should end in .png")


@dataclass(eq=False)
class Stats(Result):
    """Costs of a model: ``layers`` (one LayerRow per layer, as ``cnn stats`` rows), ``rows``
    (what the command shows: per layer or per op, sorted and cut as asked), ``totals`` (macs,
    flops, params, …), the ``inputs`` as analysed, ``unknown_ops`` (op types without a cost rule),
    ``missing_external`` (absent external-data files), ``warnings`` and ``files`` (the plot).

    >>> s.totals["macs"], s.layers[0].name  # doctest: +SKIP
    """

    model: str
    inputs: list[dict[str, Any]]
    layers: list
    totals: dict[str, Any]
    unknown_ops: list[str] = field(default_factory=list)
    missing_external: list[str] = field(default_factory=list)
    rows: list | None = None
    by: str = "layer"
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def document(self):
        from cnncli.api.sources import inputs_text
        from cnncli.render import Document

        rows = self.layers if self.rows is None else self.rows
        return Document(rows=rows, row_type=row_type(self.by), rows_key="ops" if self.by == "op" else "layers",
                        meta={"model": self.model, "inputs": self.inputs}, totals=self.totals,
                        title=f"{self.model}  ({inputs_text(self.inputs)})")

    def _repr_html_(self) -> str:
        """A table for Jupyter (every name escaped)."""
        from cnncli.api.sources import inputs_text
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


def run(model: Any, options: StatsOptions, *, on_warning: Hear | None = None) -> Stats:
    """Cost ``model`` (a path, '-', bytes or an onnx.ModelProto) with ``options``."""
    from pathlib import Path

    from cnncli.api.sources import analysed, inputs_of
    from cnncli.atomic import check_not_an_input, check_writable_dir
    from cnncli.costs.stats import by_op, compute_stats, sorted_top
    from cnncli.frontend.damage import damage_explained

    warnings = Warnings(on_warning)
    with damage_explained(), warnings.capturing():  # a crash on a damaged model file: its one-line error
        if options.plot:
            check_writable_dir(Path(options.plot).parent or Path("."), "plot")
            check_not_an_input(options.plot, (model,), "--plot")
        loaded, graph = analysed(model, options, warnings)
        result = compute_stats(graph)
        warnings.add(result.warning())
        rows = by_op(result.layers) if options.by == "op" else result.layers
        rows = sorted_top(rows, row_type(options.by), options.sort, options.top)
        files = []
        if options.plot:
            from cnncli.render.plot import save_png, stats_figure

            save_png(stats_figure(result.layers, title=Path(loaded.name).name), options.plot)
            files.append(options.plot)
    return Stats(loaded.name, inputs_of(graph), result.layers, result.totals, list(result.unknown_ops),
                 list(loaded.missing_external), rows, options.by, list(warnings), files)


def stats(model: Any, **options: Any) -> Stats:
    """Per-layer MACs, params, CPR, activation memory and receptive field of ``model`` (a path,
    bytes or an onnx.ModelProto); the options of ``cnn stats``: ``batch`` fills a symbolic leading
    dim, ``input_shapes`` sets inputs (``{"image": (1, 3, 224, 224)}`` or ``{"image": "1x3x224x224"}``),
    ``by``, ``sort``, ``top``, ``plot`` (a PNG file to write).

    >>> import cnncli
    >>> cnncli.stats("sample_models/zfnet_paper.onnx").totals["params"]
    62357608
    """
    return run(model, StatsOptions.from_kwargs(options))
