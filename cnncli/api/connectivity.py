"""`cnn connectivity` / ``cnncli.connectivity(model)``: what each conv layer's weights would be
fully connected, locally connected and shared; or, with no model, the seed article's calculator
(``input="100x100", units=100000, kernel="3x3"``: 10^9, 9×10^5 and 9 weights).

>>> import cnncli
>>> cnncli.connectivity(input="100x100", units=100000, kernel="3x3").rows[0].full
1000000000
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cnncli.api.options import ShapeOptions, dims, integer, opt
from cnncli.api.result import Hear, Result, Warnings
from cnncli.errors import BadArgument


def row_type() -> type:
    from cnncli.costs.connectivity import ConnectivityRow

    return ConnectivityRow


def __getattr__(name: str):  # the row type, exported here without importing onnx with this module
    if name == "ConnectivityRow":
        return row_type()
    raise AttributeError(name)


@dataclass(frozen=True, kw_only=True)
class ConnectivityOptions(ShapeOptions):
    input: tuple | None = opt(None, "--input", dims((2, 3), "HxW or CxHxW"))
    units: int | None = opt(None, "--units", integer(1, optional=True))
    kernel: tuple | None = opt(None, "--kernel", dims(example="KxK"))

    @property
    def calculator(self) -> bool:
        return any(v is not None for v in (self.input, self.units, self.kernel))


@dataclass(eq=False)
class Connectivity(Result):
    """One ConnectivityRow per conv layer (or the calculator's one row) in ``rows``."""

    model: str | None
    inputs: list[dict[str, Any]]
    rows: list
    title: str
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def document(self):
        from cnncli.render import Document

        return Document(rows=self.rows, row_type=row_type(), meta={"model": self.model, "inputs": self.inputs},
                        title=self.title)


def run(model: Any | None, options: ConnectivityOptions, *, on_warning: Hear | None = None) -> Connectivity:
    """The table of ``model``'s conv layers, or (``model`` None) the calculator's row."""
    from cnncli.costs.connectivity import calculator, model_connectivity

    o = options
    if model is not None and o.calculator:
        raise BadArgument(None, "give either MODEL or --input/--units/--kernel, not both")
    warnings = Warnings(on_warning)
    if model is None:
        if o.input is None or o.units is None or o.kernel is None:
            raise BadArgument(None, "give MODEL, or all of --input, --units and --kernel")
        channels, hw = (o.input[0], o.input[1:]) if len(o.input) == 3 else (1, o.input)
        shape = "x".join(map(str, o.input))
        return Connectivity(None, [{"name": "image", "shape": list(o.input)}], [calculator(hw, o.units, o.kernel, channels)],
                            f"{shape} image into {o.units:,} units, {'x'.join(map(str, o.kernel))} windows")
    from cnncli.api.sources import analysed, inputs_of
    from cnncli.frontend.damage import damage_explained

    with damage_explained(), warnings.capturing():
        loaded, graph = analysed(model, o, warnings)
        rows = model_connectivity(graph)
    return Connectivity(loaded.name, inputs_of(graph), rows, f"{loaded.name}: weights per conv layer (per sample)",
                        list(warnings))


def connectivity(model: Any | None = None, **options: Any) -> Connectivity:
    """Weights of each conv layer of ``model`` fully connected vs locally connected vs shared, or
    the calculator (``input``, ``units``, ``kernel``) when no model is given."""
    return run(model, ConnectivityOptions.from_kwargs(options))
