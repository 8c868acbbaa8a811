"""One renderer for every command: rows of frozen dataclasses to table, JSON, JSONL, CSV or Markdown.

Column headers and kinds come from the row dataclass's field metadata (see ``stats.col``), so a
row type defines its columns once for every format. JSON and CSV are written with the standard
library, never through rich; only the human table uses rich.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Sequence, TextIO

FORMATS = ("table", "json", "jsonl", "csv", "markdown")


@dataclass
class Document:
    rows: Sequence[Any]  # frozen dataclass instances of one type
    row_type: type
    rows_key: str = "layers"
    meta: dict[str, Any] = field(default_factory=dict)  # JSON keys before the rows
    totals: dict[str, Any] | None = None  # JSON "totals"; a summary under human tables
    title: str | None = None


def col(header: str, kind: str = "text", **extra: Any):
    """Column metadata for a row field: header text and kind (int, shape, dims, text).

    ``unknown=True`` marks a column whose None means "could not be computed" (shown as ?).
    """
    return field(metadata={"header": header, "kind": kind, **extra})


def columns(row_type: type) -> list[dataclasses.Field]:
    return list(dataclasses.fields(row_type))


def _cell(value: Any, kind: str, human: bool) -> str:
    if value is None:
        return "?" if kind == "unknown" else ""
    if kind == "shape" and isinstance(value, (list, tuple)):
        return "x".join("?" if v is None else str(v) for v in value)
    if kind == "dims" and isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and human and kind == "int":
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if human else repr(value)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return "  ".join(str(v) for v in value.values()) if kind == "files" else json.dumps(value)
    return str(value)


def cells(row: Any, human: bool) -> list[str]:
    out = []
    for f in columns(type(row)):
        value = getattr(row, f.name)
        kind = f.metadata.get("kind", "text")
        if value is None and f.metadata.get("unknown"):
            kind = "unknown"
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


def render(doc: Document, fmt: str, stream: TextIO) -> None:
    if fmt == "json":
        payload = {**to_json_value(doc.meta), doc.rows_key: [to_json_value(r) for r in doc.rows]}
        if doc.totals is not None:
            payload["totals"] = to_json_value(doc.totals)
        json.dump(payload, stream, indent=2)
        stream.write("\n")
    elif fmt == "jsonl":
        for r in doc.rows:
            stream.write(json.dumps(to_json_value(r)) + "\n")
    elif fmt == "csv":
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow([f.name for f in columns(doc.row_type)])
        for r in doc.rows:
            writer.writerow(cells(r, human=False))
    elif fmt == "markdown":
        _markdown(doc, stream)
    elif fmt == "table":
        _table(doc, stream)
    else:
        raise ValueError(f"unknown format {fmt!r}")


def _headers(row_type: type) -> list[str]:
    return [f.metadata.get("header", f.name) for f in columns(row_type)]


def _numeric(row_type: type) -> list[bool]:
    return [f.metadata.get("kind") == "int" for f in columns(row_type)]


def _summary_lines(totals: dict[str, Any]) -> list[tuple[str, str]]:
    lines = []
    for key, value in totals.items():
        if isinstance(value, dict):
            text = ", ".join(f"{k}: {_cell(v, 'int', True)}" for k, v in value.items()) or "-"
        elif isinstance(value, list):
            text = ", ".join(str(v) for v in value) or "-"
        else:
            text = _cell(value, "int", True)
        lines.append((key, text))
    return lines


def _markdown(doc: Document, stream: TextIO) -> None:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    if doc.title:
        stream.write(f"**{esc(doc.title)}**\n\n")
    heads = _headers(doc.row_type)
    nums = _numeric(doc.row_type)
    stream.write("| " + " | ".join(esc(h) for h in heads) + " |\n")
    stream.write("|" + "|".join("---:" if n else "---" for n in nums) + "|\n")
    for r in doc.rows:
        stream.write("| " + " | ".join(esc(c) for c in cells(r, human=True)) + " |\n")
    if doc.totals:
        stream.write("\n| total | value |\n|---|---:|\n")
        for k, v in _summary_lines(doc.totals):
            stream.write(f"| {esc(k)} | {esc(v)} |\n")


def _table(doc: Document, stream: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    tty = stream.isatty() if hasattr(stream, "isatty") else False
    console = Console(file=stream, width=None if tty else 400, highlight=False, soft_wrap=not tty)
    table = Table(title=doc.title, show_lines=False, header_style="bold")
    for head, num in zip(_headers(doc.row_type), _numeric(doc.row_type)):
        table.add_column(head, justify="right" if num else "left", overflow="fold")
    for r in doc.rows:
        table.add_row(*cells(r, human=True))
    console.print(table)
    if doc.totals:
        summary = Table(show_header=False, box=None, pad_edge=False)
        summary.add_column(style="bold")
        summary.add_column(justify="right")
        for k, v in _summary_lines(doc.totals):
            summary.add_row(k, v)
        console.print(summary)
