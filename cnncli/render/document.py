"""What every renderer shares: the document and the text of each cell (the column metadata of row
dataclasses is in :mod:`cnncli.columns`, below every layer that defines rows)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from cnncli.choices import FORMATS  # noqa: F401  (re-exported: the renderer's formats)
from cnncli.columns import col, column_names, columns, compact_names, headers, kinds, numeric, pick_columns  # noqa: F401


@dataclass
class Document:
    rows: Sequence[Any]  # frozen dataclass instances of one type
    row_type: type
    rows_key: str = "layers"
    meta: dict[str, Any] = field(default_factory=dict)  # JSON keys before the rows
    totals: dict[str, Any] | None = None  # JSON "totals"; a summary under human tables
    title: str | None = None
    files: dict[str, str] | None = None  # the run's files that belong to no one row (an overview, a contact sheet)


def cell_parts(value: Any, kind: str) -> list[str] | None:
    """The values of a cell that holds several (a row's files, `cnn top`'s ranked images), each
    as its own text; None for any other cell. Tables join them with two spaces, Markdown one a
    line, CSV one a field."""
    if kind == "entries" and isinstance(value, (list, tuple)):
        return [f"{Path(e.image).name}@{','.join(map(str, e.location))}" for e in value]
    if kind == "files" and isinstance(value, dict):
        return [str(v) for v in value.values()]
    return None


def _cell(value: Any, kind: str, human: bool) -> str:
    if value is None:
        return "?" if kind == "unknown" else ""
    if kind == "shape" and isinstance(value, (list, tuple)):
        return "x".join(["?" if v is None else str(v) for v in value])
    if kind == "dims" and isinstance(value, (list, tuple)):
        return ",".join([str(v) for v in value])
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and human and kind == "int":
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if human else repr(value)
    parts = cell_parts(value, kind)
    if parts is not None:
        return "  ".join(parts)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


_cell_specs: dict[type, tuple[tuple[str, str, bool], ...]] = {}
_shape_texts: dict[tuple, str] = {}  # (kind, *dims) -> its cell text
_int_texts: dict[int, str] = {}  # count -> its text with thousands separators


def cells(row: Any, human: bool) -> list[str]:
    """The text of each cell of ``row``: numbers with thousands separators when ``human``
    (tables, Markdown), plain (CSV) otherwise. Exact either way."""
    specs = _cell_specs.get(type(row))
    if specs is None:  # (name, kind, unknown) of each column, looked up once per row type
        specs = tuple((f.name, f.metadata.get("kind", "text"), bool(f.metadata.get("unknown"))) for f in columns(type(row)))
        _cell_specs[type(row)] = specs
    out = []
    for name, kind, unknown in specs:
        value = getattr(row, name)
        t = type(value)
        if value is None:  # what _cell gives, inlined for the commonest values (tables of 10^4 rows)
            out.append("?" if unknown else "")
        elif t is str:
            out.append(value)
        elif t is int:
            if human and kind == "int":  # the same few counts recur down a deep net: each one's text once
                text = _int_texts.get(value)
                if text is None:
                    text = f"{value:,}"
                    if len(_int_texts) < 65536:
                        _int_texts[value] = text
                out.append(text)
            else:
                out.append(str(value))
        elif (t is list or t is tuple) and (kind == "shape" or kind == "dims"):
            key = (kind, *value)  # the same few shapes recur down a deep net: each one's text once
            text = _shape_texts.get(key)
            if text is None:
                text = _cell(value, kind, human)
                if len(_shape_texts) < 65536:
                    _shape_texts[key] = text
            out.append(text)
        else:
            out.append(_cell(value, kind, human))
    return out


def to_json_value(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json_value(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_json_value(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_value(v) for v in obj]
    return obj


def summary_lines(totals: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, text) of each total, for the summary under a human table."""
    lines = []
    for key, value in totals.items():
        if isinstance(value, dict):
            text = ", ".join(f"{k}: {_cell(v, 'int', True)}" for k, v in value.items()) or "-"
        elif isinstance(value, list):
            text = ", ".join(str(v) for v in value) or "-"
        else:
            text = _cell(value, "int", True)
        lines.append((str(key), text))
    return lines
