"""Column metadata of row dataclasses: a row type defines its columns once (``col(...)`` on each
field): header, kind, whether the column is in the compact set a terminal shows by default,
whether None means "unknown". Table, JSON, CSV and Markdown all read them; the layers that define
rows (costs, engine, api) import this module, not the renderer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any, Sequence


def col(header: str, kind: str = "text", *, compact: bool = False, **extra: Any):
    """Column metadata for a row field: header text and kind (int, shape, dims, text, entries,
    files).

    ``compact=True`` puts the column in the set a terminal shows by default (a row type that
    marks none shows all of its columns); ``unknown=True`` marks a column whose None means
    "could not be computed" (shown as ?); ``unit`` and ``doc`` say what the values measure, for
    the pages that explain their columns (``cnn report``).
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


def described(row_type: type, names: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(field, header with its unit, what it means)`` for the ``names`` the row type has, in
    that order: a page's table and its legend, from the row's own column metadata."""
    by_name = {f.name: f for f in columns(row_type)}
    out = []
    for name in names:
        f = by_name.get(name)
        if f is None:
            continue
        head, unit = str(f.metadata.get("header", name)), f.metadata.get("unit")
        out.append((name, f"{head} ({unit})" if unit else head, str(f.metadata.get("doc", ""))))
    return out
