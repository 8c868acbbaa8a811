"""What every renderer shares: the document, the column metadata of row dataclasses, and the
text of each cell.

A row type defines its columns once (``col(...)`` on each field): header, kind, whether the
column is in the compact set a terminal shows by default, whether None means "unknown".
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

FORMATS = ("table", "json", "jsonl", "csv", "markdown")


@dataclass
class Document:
    rows: Sequence[Any]  # frozen dataclass instances of one type
    row_type: type
    rows_key: str = "layers"
    meta: dict[str, Any] = field(default_factory=dict)  # JSON keys before the rows
    totals: dict[str, Any] | None = None  # JSON "totals"; a summary under human tables
    title: str | None = None


def col(header: str, kind: str = "text", *, compact: bool = False, **extra: Any):
    """Column metadata for a row field: header text and kind (int, shape, dims, text, entries,
    files).

    ``compact=True`` puts the column in the set a terminal shows by default (a row type that
    marks none shows all of its columns); ``unknown=True`` marks a column whose None means
    "could not be computed" (shown as ?).
    """
    return field(metadata={"header": header, "kind": kind, "compact": compact, **extra})


def columns(row_type: type) -> list[dataclasses.Field]:
    return list(dataclasses.fields(row_type))


def column_names(row_type: type) -> list[str]:
    return [f.name for f in columns(row_type)]


def compact_names(row_type: type) -> list[str]:
    """The columns a terminal shows by default: those marked ``compact``, else all."""
    marked = [f.name for f in columns(row_type) if f.metadata.get("compact")]
    return marked or column_names(row_type)


def pick_columns(row_type: type, wanted: Sequence[str] | None) -> list[int]:
    """Indexes of the ``wanted`` columns (field names or headers, any case), in the order
    given; all columns when ``wanted`` is None. Raises BadArgument naming the valid ones."""
    fields = columns(row_type)
    if wanted is None:
        return list(range(len(fields)))
    lookup: dict[str, int] = {}
    for i, f in enumerate(fields):
        lookup.setdefault(f.name.lower(), i)
        lookup.setdefault(str(f.metadata.get("header", f.name)).lower(), i)
    out, unknown = [], []
    for name in wanted:
        i = lookup.get(name.strip().lower())
        if i is None:
            unknown.append(name)
        elif i not in out:
            out.append(i)
    if unknown or not out:
        from cnncli.errors import BadArgument

        what = f"no column {', '.join(repr(u) for u in unknown)}" if unknown else "no columns given"
        raise BadArgument("--columns", f"{what} (columns: {', '.join(f.name for f in fields)})")
    return out


def headers(row_type: type) -> list[str]:
    return [f.metadata.get("header", f.name) for f in columns(row_type)]


def kinds(row_type: type) -> list[str]:
    return [f.metadata.get("kind", "text") for f in columns(row_type)]


def numeric(row_type: type) -> list[bool]:
    return [f.metadata.get("kind") == "int" for f in columns(row_type)]


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
    if kind == "entries" and isinstance(value, (list, tuple)):
        return "  ".join(f"{Path(e.image).name}@{','.join(map(str, e.location))}" for e in value)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return "  ".join(str(v) for v in value.values()) if kind == "files" else json.dumps(value)
    return str(value)


_cell_specs: dict[type, tuple[tuple[str, str, bool], ...]] = {}
_shape_texts: dict[tuple, str] = {}  # (kind, *dims) -> its cell text


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
            out.append(f"{value:,}" if human and kind == "int" else str(value))
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
