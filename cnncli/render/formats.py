"""JSON, JSONL, CSV and Markdown writers: exact values, every field.

JSON goes through the standard library's C encoder (``json.dump(indent=…)`` uses the pure-Python
one, which took seconds on models of 10^4 layers) and is always strict JSON: a NaN or infinity
becomes null, and the caller hears about it once.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
from itertools import repeat
from typing import Any, Callable, Iterable, Sequence

from cnncli.render.document import (Document, cell_parts, cells, columns, headers, numeric, summary_lines,
                                    to_json_value)
from cnncli.escaping import ESCAPED_CLASS, visible

Write = Callable[[str], Any]

_field_names: dict[type, tuple[str, ...]] = {}
_by_dict: set[type] = set()  # frozen dataclasses whose instance __dict__ holds exactly their fields, in order


def _fields_of(obj: Any) -> dict[str, Any]:
    """``default`` hook of the JSON encoder: a dataclass row as an object of its fields (and a
    numpy scalar or array as its Python value). A frozen row's own ``__dict__`` is that object
    when it holds the fields and nothing else (its generated ``__init__`` set them in order)."""
    kind = type(obj)
    if kind in _by_dict:
        own = obj.__dict__
        if len(own) == len(_field_names[kind]):
            return own
    names = _field_names.get(kind)
    if names is None:
        if not dataclasses.is_dataclass(obj):
            if hasattr(obj, "dtype") and hasattr(obj, "tolist"):
                return obj.tolist()
            raise TypeError(f"Object of type {kind.__name__} is not JSON serializable")
        names = _field_names[kind] = tuple(f.name for f in dataclasses.fields(obj))
        own = getattr(obj, "__dict__", None)
        params = getattr(kind, "__dataclass_params__", None)  # None for a dataclass's class itself
        if params is not None and params.frozen and own is not None and tuple(own) == names:
            _by_dict.add(kind)
    return {n: getattr(obj, n) for n in names}


def _c_encoder() -> Callable[[Any, int], Any] | None:
    """The standard library's C encoder as ``json.dumps(obj, default=_fields_of,
    allow_nan=False)`` makes it, made once here rather than once a call (that set-up was most of
    the cost of a row): the arguments ``JSONEncoder.iterencode`` passes it (Python 3.10-3.13),
    with no circular check (rows hold no cycles). ``encode(obj, 0)`` gives the text's chunks.
    None where there is no C encoder (json.dumps itself is used then)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    try:
        encode = make(None, _fields_of, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, False)
        sample = {"a": [1, 2.5, None, True, "é\n"], "b": {"c": -0.0}}  # a Python whose encoder reads
        if "".join(encode(sample, 0)) != json.dumps(sample, allow_nan=False):  # its arguments otherwise
            return None
        return encode
    except (TypeError, ValueError):  # no C encoder (None), or another signature
        return None


_encode = _c_encoder()


def _dumps(obj: Any) -> str:
    if _encode is not None:
        return "".join(_encode(obj, 0))
    return json.dumps(obj, default=_fields_of, allow_nan=False)


def finite(obj: Any) -> Any:
    """``obj`` (dataclasses, dicts, lists, floats) as plain JSON values with every NaN and
    infinity replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return finite(to_json_value(obj))
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if hasattr(obj, "dtype") and hasattr(obj, "tolist"):  # a numpy scalar or array
        return finite(obj.tolist())
    return obj


class NotFinite:
    """Counts the values written as null because they were NaN or infinite."""

    def __init__(self) -> None:
        self.count = 0

    def dumps(self, obj: Any) -> str:
        try:
            return _dumps(obj)
        except ValueError:  # "Out of range float values are not JSON compliant"
            self.count += 1
            return _dumps(finite(obj))

    def dumps_all(self, objs: Sequence[Any]) -> Iterable[str]:
        """``dumps`` of each of ``objs``, all in C while none holds a NaN or infinity."""
        if _encode is not None:
            try:
                return list(map("".join, map(_encode, objs, repeat(0))))
            except ValueError:
                pass
        return map(self.dumps, objs)


def json_document(doc: Document, write: Write, bad: NotFinite) -> None:
    """One object: the meta keys, the rows (one compact object a line), then the totals."""
    dumps = bad.dumps
    items = [f"  {dumps(k)}: {dumps(v)}" for k, v in doc.meta.items()]
    rows = ",\n    ".join(bad.dumps_all(doc.rows))
    items.append(f"  {dumps(doc.rows_key)}: [" + (f"\n    {rows}\n  ]" if rows else "]"))
    if doc.totals is not None:
        items.append(f'  "totals": {dumps(doc.totals)}')
    write("{\n" + ",\n".join(items) + "\n}\n")


def jsonl(doc: Document, write: Write, bad: NotFinite) -> None:
    for line in bad.dumps_all(doc.rows):
        write(line + "\n")


class _Sink:
    def __init__(self, write: Write):
        self.write = write


def _plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _spread(doc: Document, name: str, kind: str) -> tuple[list[str], Callable[[Any], list[str]]] | None:
    """A column holding several values as one CSV field per value: ``files`` as ``files.png``,
    ``files.figure``… (one per kind of file, in the order first met); ``entries`` (a ranked list
    of dataclasses, `cnn top`'s images) as ``entries.1.image``, ``entries.1.activation``… per
    rank. None for any other column."""
    values = [getattr(r, name) for r in doc.rows]
    if kind == "files":
        keys = list(dict.fromkeys(k for v in values if isinstance(v, dict) for k in v))
        return [f"{name}.{k}" for k in keys], lambda v: [str((v or {}).get(k, "")) for k in keys]
    if kind == "entries":
        ranks = max((len(v) for v in values if isinstance(v, (list, tuple))), default=0)
        first = next((e for v in values for e in (v or ()) if dataclasses.is_dataclass(e)), None)
        if first is None:
            return None
        fields = [f.name for f in dataclasses.fields(first)]
        heads = [f"{name}.{i + 1}.{f}" for i in range(ranks) for f in fields]
        return heads, lambda v: [_plain(getattr(e, f)) for e in (v or ()) for f in fields] + [""] * (
            len(heads) - len(v or ()) * len(fields))
    return None


def csv_rows(doc: Document, write: Write, picked: list[int], escape: bool = False) -> None:
    """CSV with exact cells, one value per field: a column of several files or ranked entries
    spread over one field each (``files.png``, ``files.figure``; ``entries.1.image``…), the run's
    own files (``doc.files``: an overview) as one more column each, the same on every row. With
    ``escape`` (stdout is a terminal) each cell goes through ``visible``, so that a name from the
    model sends the terminal no control or bidi character."""
    writer = csv.writer(_Sink(write), lineterminator="\n")
    fields = columns(doc.row_type)
    spread = {i: _spread(doc, fields[i].name, fields[i].metadata.get("kind", "text")) for i in picked}
    head: list[str] = []
    for i in picked:
        head.extend(spread[i][0] if spread[i] else [fields[i].name])
    extra = {k: v or "" for k, v in (doc.files or {}).items()}
    writer.writerow(head + list(extra))
    simple = not any(spread.values()) and not extra and len(picked) == len(fields)
    for r in doc.rows:
        cs = cells(r, human=False)
        if not simple:
            row: list[str] = []
            for i in picked:
                row.extend(spread[i][1](getattr(r, fields[i].name)) if spread[i] else [cs[i]])
            cs = row + list(extra.values())
        writer.writerow([visible(c) for c in cs] if escape else cs)


_MD = str.maketrans({c: "\\" + c for c in "\\|*`[]<>&"})
# True for text (cells joined by \x00) that md_escape would leave as it is
_MD_PLAIN = re.compile(r"[^\\|*`\[\]<>&" + ESCAPED_CLASS.replace("\x00", "\x01") + "]*").fullmatch


def md_escape(text: str) -> str:
    """``text`` shown verbatim in a Markdown table cell: the characters Markdown would read as
    syntax (``|`` above all, which ends the cell) backslash-escaped, line breaks as ``<br>``,
    other control characters as visible escapes."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_MD)
    if "\n" in text:
        text = "<br>".join(text.split("\n"))
    return visible(text)


def markdown(doc: Document, write: Write, picked: list[int]) -> None:
    out = []
    if doc.title:
        out.append(f"**{md_escape(doc.title)}**\n\n")
    heads = headers(doc.row_type)
    nums = numeric(doc.row_type)
    out.append("| " + " | ".join(md_escape(heads[i]) for i in picked) + " |\n")
    out.append("|" + "|".join("---:" if nums[i] else "---" for i in picked) + "|\n")
    full = len(picked) == len(heads)
    fields = columns(doc.row_type)
    several = [(j, fields[i].name, fields[i].metadata.get("kind")) for j, i in enumerate(picked)
               if fields[i].metadata.get("kind") in ("files", "entries")]  # one value a line in its cell
    for r in doc.rows:
        cs = cells(r, human=True)
        if not full:
            cs = [cs[i] for i in picked]
        line = "\x00".join(cs)
        if not several and _MD_PLAIN(line) and line.count("\x00") == len(cs) - 1:  # nothing to escape: the common case
            out.append("| " + line.replace("\x00", " | ") + " |\n")
            continue
        cs = list(map(md_escape, cs))
        for j, name, kind in several:
            parts = cell_parts(getattr(r, name), kind)
            if parts is not None:
                cs[j] = "<br>".join(map(md_escape, parts))
        out.append("| " + " | ".join(cs) + " |\n")
    files = {k: v for k, v in (doc.files or {}).items() if v}  # the run's own files (an overview), as in a table
    if files:
        out.append("\n" + "".join(f"- {md_escape(k)}: {md_escape(v)}\n" for k, v in files.items()))
    if doc.totals:
        out.append("\n| total | value |\n|---|---:|\n")
        for k, v in summary_lines(doc.totals):
            out.append(f"| {md_escape(k)} | {md_escape(v)} |\n")
    write("".join(out))
