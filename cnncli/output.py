"""One renderer for every command: rows of frozen dataclasses to table, JSON, JSONL, CSV or Markdown.

Column headers and kinds come from the row dataclass's field metadata (see ``stats.col``), so a
row type defines its columns once for every format. JSON and CSV are written with the standard
library, never through rich; only the human table uses rich.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TextIO

from cnncli.gcpause import gc_paused

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


def cells(row: Any, human: bool) -> list[str]:
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


_field_names: dict[type, tuple[str, ...]] = {}


def _fields_of(obj: Any) -> dict[str, Any]:
    """``default`` hook of the JSON encoder: a dataclass row as an object of its fields."""
    if not dataclasses.is_dataclass(obj):
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")
    names = _field_names.get(type(obj))
    if names is None:
        names = _field_names[type(obj)] = tuple(f.name for f in dataclasses.fields(obj))
    return {n: getattr(obj, n) for n in names}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=_fields_of)


def _json_document(doc: Document) -> str:
    """One object: the meta keys, the rows (one compact object a line), then the totals.

    Every piece goes through the C JSON encoder; ``json.dump(indent=…)`` uses the pure-Python
    one, which took seconds on models of 10^4 layers.
    """
    items = [f"  {_dumps(k)}: {_dumps(v)}" for k, v in doc.meta.items()]
    rows = ",\n    ".join(map(_dumps, doc.rows))
    items.append(f"  {_dumps(doc.rows_key)}: [" + (f"\n    {rows}\n  ]" if rows else "]"))
    if doc.totals is not None:
        items.append(f'  "totals": {_dumps(doc.totals)}')
    return "{\n" + ",\n".join(items) + "\n}\n"


def render(doc: Document, fmt: str, stream: TextIO) -> None:
    with gc_paused():
        _render(doc, fmt, stream)


def _render(doc: Document, fmt: str, stream: TextIO) -> None:
    if fmt == "json":
        stream.write(_json_document(doc))
    elif fmt == "jsonl":
        for r in doc.rows:
            stream.write(_dumps(r) + "\n")
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


_PIPE_WIDTH = 400  # line width of tables written to a file or pipe
# Text that rich would print as is: printable ASCII, no markup ('['), no ':emoji:' code. In
# cells also no leading, trailing or doubled space (rich may strip or re-wrap those). \x00
# separates the cells of the joined text that is checked.
_RICH_UNSAFE_TEXT = re.compile(r"[^ -~]|\[|:\S*?:")
_RICH_UNSAFE_CELLS = re.compile(r"[^\x00 -~]|\[|:[^\s\x00]*?:|\x00 | \x00|  |^ | $")


def _plain_table(doc: Document, rows: list[list[str]], summary: list[tuple[str, str]], stream: TextIO) -> bool:
    """Write the table exactly as rich prints it to a non-terminal, without rich (which takes
    about 1 ms a row); False, having written nothing, where the text or the environment might
    make rich print anything else (styles, markup, emoji, wrapping, another box)."""
    import builtins
    import os

    if "FORCE_COLOR" in os.environ or "TTY_COMPATIBLE" in os.environ or hasattr(builtins, "get_ipython"):
        return False
    if not (getattr(stream, "encoding", "utf-8") or "utf-8").lower().startswith("utf"):
        return False
    heads = _headers(doc.row_type)
    if not rows or (doc.title is not None and (not doc.title or _RICH_UNSAFE_TEXT.search(doc.title))):
        return False
    if _RICH_UNSAFE_CELLS.search("\x00".join("\x00".join(r) for r in [heads, *rows])):
        return False
    widths = [max(map(len, col)) for col in zip(heads, *rows)]
    if sum(w + 2 for w in widths) > _PIPE_WIDTH - (len(widths) + 1):
        return False  # rich would fold cells to fit
    right = _numeric(doc.row_type)
    lines = []
    if doc.title is not None:
        lines.append(doc.title)
    lines.append("┏" + "┳".join("━" * (w + 2) for w in widths) + "┓")
    lines.append("┃ " + " ┃ ".join(h.rjust(w) if r else h.ljust(w) for h, w, r in zip(heads, widths, right)) + " ┃")
    lines.append("┡" + "╇".join("━" * (w + 2) for w in widths) + "┩")
    fmt = "│ " + " │ ".join("{:>%d}" % w if r else "{:<%d}" % w for w, r in zip(widths, right)) + " │"
    lines.extend(fmt.format(*r) for r in rows)
    lines.append("└" + "┴".join("─" * (w + 2) for w in widths) + "┘")
    if summary:
        if _RICH_UNSAFE_CELLS.search("\x00".join(k + "\x00" + v for k, v in summary)):
            return False
        kw = max(len(k) for k, _ in summary)
        vw = max(len(v) for _, v in summary)
        if kw + vw + 2 > _PIPE_WIDTH:
            return False
        lines.extend(k.ljust(kw) + "  " + v.rjust(vw) for k, v in summary)
    stream.write("\n".join(lines) + "\n")
    return True


def _table(doc: Document, stream: TextIO) -> None:
    tty = stream.isatty() if hasattr(stream, "isatty") else False
    rows = [cells(r, human=True) for r in doc.rows]
    summary = _summary_lines(doc.totals) if doc.totals else []
    if not tty and _plain_table(doc, rows, summary, stream):
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream, width=None if tty else _PIPE_WIDTH, highlight=False, soft_wrap=not tty)
    table = Table(title=doc.title, show_lines=False, header_style="bold")
    for head, num in zip(_headers(doc.row_type), _numeric(doc.row_type)):
        table.add_column(head, justify="right" if num else "left", overflow="fold")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    if doc.totals:
        summary_table = Table(show_header=False, box=None, pad_edge=False)
        summary_table.add_column(style="bold")
        summary_table.add_column(justify="right")
        for k, v in summary:
            summary_table.add_row(k, v)
        console.print(summary_table)
