"""One renderer for every command: rows of frozen dataclasses to table, JSON, JSONL, CSV or
Markdown, on any output stream.

- document.py: the Document, column metadata (``col``) and cell texts, shared by all formats;
- formats.py: JSON/JSONL/CSV/Markdown (exact values, strict JSON);
- table.py: tables for people (every column on a pipe, the columns that fit on a terminal);
- text.py: human units, display width, shortening, ASCII fallback.

Names and paths go through ``cnncli.escaping.visible`` (control and bidi characters as escapes)
in what is meant for people wherever it goes: the table and Markdown. JSON and JSONL are always
ASCII (``\u001b``), so safe anywhere and exact. CSV is exact in a pipe or a file and escaped on a
terminal.

``render`` writes to a stream and turns its failures into the tool's errors: a reader that went
away (``| head``) ends the run quietly (BrokenPipeError goes up to the CLI, which exits 0); a
full disk or a closed stream is a ``CnnError``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, TextIO

from cnncli.gcpause import gc_paused
from cnncli.render.document import (
    FORMATS,
    Document,
    cells,
    col,
    column_names,
    columns,
    compact_names,
    headers,
    pick_columns,
    to_json_value,
)

__all__ = [
    "FORMATS", "Document", "cells", "col", "column_names", "columns", "compact_names",
    "pick_columns", "render", "to_json_value",
]


def _stream_name(stream: Any) -> str:
    import sys

    if stream is sys.__stdout__ or getattr(stream, "name", None) in ("<stdout>", 1):
        return "standard output"
    return str(getattr(stream, "name", "the output"))


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no such method, or a closed stream
        return False


def render(doc: Document, fmt: str, stream: TextIO | None, *, columns: Sequence[str] | None = None,
           wide: bool = False, warn: Callable[[str], None] | None = None,
           note: Callable[[str], None] | None = None) -> None:
    """Write ``doc`` to ``stream`` in format ``fmt``.

    ``columns`` (field names or headers) picks the columns of table, Markdown and CSV output;
    JSON and JSONL always carry every field. On a terminal the table shows the row type's
    compact columns unless ``wide`` or ``columns`` says otherwise. ``warn`` hears about values
    written as null in JSON (default: cnncli.render.console.warn); ``note`` the line that names
    the columns a terminal's table leaves out (default: cnncli.render.console.info, on stderr).
    """
    from cnncli.errors import CnnError

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    picked = pick_columns(doc.row_type, columns)
    if stream is None:
        raise CnnError("standard output is closed: nothing to write the output to")
    try:
        with gc_paused():
            _render(doc, fmt, stream, picked, columns is not None or wide, warn, note)
        stream.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:  # a full disk, an I/O error
        raise CnnError(f"cannot write to {_stream_name(stream)}: {exc.strerror or exc}") from None
    except ValueError:
        if getattr(stream, "closed", False):  # "I/O operation on closed file"
            raise CnnError(f"cannot write to {_stream_name(stream)}: it is closed") from None
        raise


def _render(doc: Document, fmt: str, stream: TextIO, picked: list[int], chosen: bool, warn, note) -> None:
    from cnncli.render import formats, table
    from cnncli.render.text import encodable, is_unicode

    encoding = getattr(stream, "encoding", None) or "utf-8"
    if is_unicode(encoding) or fmt in ("json", "jsonl"):  # JSON is ASCII (ensure_ascii)
        write = stream.write
    else:
        def write(text: str) -> None:
            stream.write(encodable(text, encoding))

    if fmt in ("json", "jsonl"):
        bad = formats.NotFinite()
        (formats.json_document if fmt == "json" else formats.jsonl)(doc, write, bad)
        if bad.count:
            if warn is None:
                from cnncli.render.console import warn
            warn("some values are not finite (NaN or infinity, e.g. activations that overflowed); "
                 "they are written as null")
    elif fmt == "csv":  # exact in a pipe or a file; escaped on a terminal, as every text for people
        formats.csv_rows(doc, write, picked, escape=_isatty(stream))
    elif fmt == "markdown":
        formats.markdown(doc, write, picked)
    else:
        if not _isatty(stream):
            table.plain_table(doc, picked, stream.write, encoding)
            return
        every = picked
        if not chosen:
            wanted = set(compact_names(doc.row_type))
            picked = [i for i, name in enumerate(column_names(doc.row_type)) if name in wanted]
        left_out = table.terminal_table(doc, picked, stream.write, table.terminal_width(stream), encoding,
                                        bold=table.use_color(stream))
        heads, names = headers(doc.row_type), column_names(doc.row_type)
        hidden = [heads[i] for i in every if i not in picked and not _empty(doc, names[i])] + left_out
        if hidden:
            import textwrap

            if note is None:
                from cnncli.render.console import info as note
            text = (f"{len(hidden)} column{'s' if len(hidden) > 1 else ''} not shown: {', '.join(hidden)} "
                    "(--wide shows every column, --columns picks them)")
            for line in textwrap.wrap(text, max(20, table.terminal_width(stream)), break_on_hyphens=False):
                note(line)


def _empty(doc: Document, name: str) -> bool:
    """Whether no row has a value in column ``name`` (a column that is not shown loses nothing)."""
    def blank(v: Any) -> bool:
        return v is None or (isinstance(v, (str, tuple, list, dict)) and not v)

    return all(blank(getattr(row, name, None)) for row in doc.rows)
