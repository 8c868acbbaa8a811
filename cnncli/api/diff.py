"""`cnn diff A B` / ``cnncli.diff(a, b)``: two models (a pruned or distilled variant, two exports of
one net), or one model at two shapes (``b_batch``, ``b_input_shapes``), layer by layer: MACs,
params and activation bytes of both, their change, and with ``measure`` the measured ms of both
(`cnn profile`'s) and their ratio; layers only in one are ``added`` or ``removed``.

>>> import cnncli
>>> d = cnncli.diff("sample_models/zfnet_paper.onnx", b_batch=4)  # doctest: +SKIP
>>> {r.macs_ratio for r in d.rows}  # doctest: +SKIP
{4}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from cnncli.api.options import ShapeOptions, choice, flag, input_shapes, integer, opt
from cnncli.api.result import Hear, Result, Warnings
from cnncli.choices import OPT_LEVELS, PROVIDERS
from cnncli.errors import BadArgument


def row_type() -> type:
    """The rows `cnn diff` renders: DiffRow."""
    from cnncli.engine.diff import DiffRow

    return DiffRow


def _b_input_shapes(flag_: str, value: Any):
    return None if value is None or (isinstance(value, (tuple, list)) and not value) else input_shapes(flag_, value)


@dataclass(frozen=True, kw_only=True)
class DiffOptions(ShapeOptions):
    b_batch: int | None = opt(None, "--b-batch", integer(1, optional=True))  # default: --batch
    b_input_shapes: dict | None = opt(None, "--b-input-shape", _b_input_shapes)  # default: --input-shape
    measure: bool = opt(False, "--measure", flag)
    provider: str = opt("auto", "--provider", choice(PROVIDERS))
    warmup: int = opt(2, "--warmup", integer(0, maximum=10_000))
    runs: int = opt(10, "--runs", integer(1, maximum=100_000))
    opt_level: str = opt("all", "--opt-level", choice(OPT_LEVELS))


@dataclass(eq=False)
class Diff(Result):
    """Two models layer by layer: ``rows`` (DiffRows in A's order, each layer only in B after the
    B layer before it), ``totals`` (macs and params of both, change and ratio, counts of same,
    changed, added and removed layers, with ``measure`` the whole runs' medians), ``a`` and ``b``
    (what was compared: model and inputs), ``warnings``, ``files`` (none)."""

    a: dict[str, Any]
    b: dict[str, Any]
    rows: list
    totals: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def document(self):
        from cnncli.api.sources import inputs_text
        from cnncli.render import Document

        title = (f"A: {self.a['model']} ({inputs_text(self.a['inputs'])})  "
                 f"B: {self.b['model']} ({inputs_text(self.b['inputs'])})")
        return Document(rows=self.rows, row_type=row_type(), rows_key="layers", meta={"a": self.a, "b": self.b},
                        totals=self.totals, title=title)


def _side(model: Any, batch: int, shapes: dict, options: DiffOptions, warnings: Warnings, label: str,
          progress: Callable | None):
    """(described model, rows, totals) of one side: stats rows, or profile rows with --measure."""
    def hear(text: str) -> None:
        if label == "B" and (options.b_batch is not None or options.b_input_shapes is not None):
            # B's shape came from the --b- options: name them, and the one that would change it
            text = text.replace("--batch ", "--b-batch ").replace("--input-shape ", "--b-input-shape ")
        warnings.add(f"{label}: {text}")

    if options.measure:
        from cnncli.api import profile

        p = profile.run(model, profile.ProfileOptions(batch=batch, input_shapes=shapes, provider=options.provider,
                                                      warmup=options.warmup, runs=options.runs,
                                                      opt_level=options.opt_level), on_warning=hear, progress=progress)
        return {"model": p.model, "inputs": p.inputs}, p.layers, p.totals
    from cnncli.api import stats

    s = stats.run(model, stats.StatsOptions(batch=batch, input_shapes=shapes), on_warning=hear)
    return {"model": s.model, "inputs": s.inputs}, s.layers, s.totals


def run(a: Any, b: Any, options: DiffOptions, *, on_warning: Hear | None = None,
        progress: Callable | None = None) -> Diff:
    """Compare ``a`` with ``b`` (each a path, '-', bytes or an onnx.ModelProto; ``b`` None: ``a``
    again, at the B shapes)."""
    from cnncli.api.sources import load
    from cnncli.engine.diff import diff_rows, diff_totals

    warnings = Warnings(on_warning)
    with warnings.capturing():
        if b is None or (isinstance(a, str) and a == "-" and isinstance(b, str) and b == "-"):
            a = b = load(a)  # standard input is read once
        b_batch = options.batch if options.b_batch is None else options.b_batch
        b_shapes = options.input_shapes if options.b_input_shapes is None else options.b_input_shapes
        side_a, rows_a, totals_a = _side(a, options.batch, options.input_shapes, options, warnings, "A", progress)
        try:
            side_b, rows_b, totals_b = _side(b, b_batch, b_shapes, options, warnings, "B", progress)
        except BadArgument as exc:  # B's shapes are --b-batch and --b-input-shape
            if exc.param in ("--batch", "--input-shape"):
                raise BadArgument("--b-" + exc.param[2:], str(exc)) from None
            raise
        ms_a = {i: r.ms for i, r in enumerate(rows_a) if r.ms is not None} if options.measure else None
        ms_b = {i: r.ms for i, r in enumerate(rows_b) if r.ms is not None} if options.measure else None
        rows = diff_rows(rows_a, rows_b, ms_a, ms_b)
        totals = diff_totals(rows, totals_a, totals_b)
    return Diff(side_a, side_b, rows, totals, list(warnings), [])


def diff(a: Any, b: Any = None, **options: Any) -> Diff:
    """``a`` against ``b`` (None: ``a`` at the B shapes) layer by layer; the options of
    ``cnn diff``: ``batch``, ``input_shapes`` (A), ``b_batch``, ``b_input_shapes`` (B; default:
    A's), ``measure`` (run both: ``provider``, ``warmup``, ``runs``, ``opt_level``)."""
    return run(a, b, DiffOptions.from_kwargs(options))
