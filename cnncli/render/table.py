"""Tables for people.

On a pipe or in a file: every column (or those picked), exact numbers, one line per row, so
grep, diff and cut keep working; the layout is the one rich printed (a heavy-headed box).

On a terminal: the columns that fit its width. The compact set of the row type by default
(``--columns`` to pick, ``--wide`` for all), then, as long as the table is too wide: paths moved
under the table (never cut), headers on two lines, numbers in human units (170.8M), long text
shortened in the middle where different texts stay different (else columns on the right left
out, which ``terminal_table`` returns for the caller to name); and when even that does not fit,
each row as a record of ``header value`` pairs over a few lines. A number is never split across
lines.

Every string from a model (names, paths) is printed as is: nothing is read as markup, and
control and bidi characters are shown as escapes (``\\n``, ``\\e``, ``\\u202e``), on a pipe too
(``cnncli.escaping.visible``; JSON, JSONL and CSV carry the exact text).
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from typing import Any, Callable

from cnncli.escaping import visible
from cnncli.render.document import Document, cell_parts, cells, column_names, headers, kinds, summary_lines
from cnncli.render.text import encodable, human, is_unicode, shorten_distinct, shorten_middle, width

Write = Callable[[str], Any]

_SHRINKABLE = ("text", "entries")  # kinds whose cells may be shortened in the middle (never paths: "files", "path")
_MIN_SHRUNK = 8  # cells shortened to no fewer cells than this


@dataclass
class Grid:
    """The cell texts of a table, prepared for one output stream."""

    heads: list[str]
    kinds: list[str]
    rows: list[list[str]]  # exact texts (numbers with thousands separators)
    units: list[list[str]] | None = None  # the same with integers in human units (terminal only)
    numbers: list[bool] | None = None  # columns whose values are all numbers (terminal only)

    @property
    def right(self) -> list[bool]:
        return [k == "int" for k in self.kinds]

    @property
    def right_terminal(self) -> list[bool]:
        return [k == "int" or bool(self.numbers and self.numbers[j]) for j, k in enumerate(self.kinds)]

    def shrinkable(self, j: int) -> bool:
        """Whether column j holds text that may be shortened in the middle (never numbers)."""
        return self.kinds[j] in _SHRINKABLE and not (self.numbers and self.numbers[j])

    def without(self, gone: set[int]) -> "Grid":
        """The grid less the columns ``gone``."""
        def keep(cells: list | None) -> list | None:
            return None if cells is None else [c for j, c in enumerate(cells) if j not in gone]

        return Grid(keep(self.heads), keep(self.kinds), [keep(r) for r in self.rows],
                    None if self.units is None else [keep(r) for r in self.units], keep(self.numbers))


def grid(doc: Document, picked: list[int], prep: Callable[[str], str] | None, with_units: bool) -> Grid:
    heads_all, kinds_all = headers(doc.row_type), kinds(doc.row_type)
    heads = [heads_all[i] for i in picked]
    ks = [kinds_all[i] for i in picked]
    full = len(picked) == len(heads_all)
    rows = [cells(r, human=True) for r in doc.rows]
    if not full:
        rows = [[r[i] for i in picked] for r in rows]
    if prep is not None:
        heads = [prep(h) for h in heads]
        rows = [[prep(c) for c in r] for r in rows]
    units = numbers = None
    if with_units:
        names = [column_names(doc.row_type)[i] for i in picked]
        numbers = [
            all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (getattr(r, n) for r in doc.rows) if v is not None)
            for n in names
        ]
        units = []
        for r, texts in zip(doc.rows, rows):
            u = list(texts)
            for j, kind in enumerate(ks):
                value = getattr(r, names[j])
                if kind == "int" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    u[j] = human(value)
            units.append(u)
    return Grid(heads, ks, rows, units, numbers)


def _preparer(encoding: str | None) -> Callable[[str], str] | None:
    """What each cell goes through for this stream: control characters made visible, and for
    a stream that is not Unicode, ASCII where needed. None: the cells are fine as they are."""
    if is_unicode(encoding):
        return visible
    return lambda s: encodable(visible(s), encoding)


# ----------------------------------------------------------------------------- pipes and files


def plain_table(doc: Document, picked: list[int], write: Write, encoding: str | None) -> None:
    """Every picked column, exact, one line per row."""
    g = grid(doc, picked, None, with_units=False)
    joined = "\x00".join("\x00".join(r) for r in [g.heads, *g.rows])
    simple = joined.isascii() and joined.replace("\x00", "").isprintable()
    if not simple:  # names with control characters, wide or non-ASCII characters
        prep = _preparer(encoding)
        g = Grid([prep(h) for h in g.heads], g.kinds, [[prep(c) for c in r] for r in g.rows])
    measure = len if simple else width
    widths = [max(map(measure, column)) for column in zip(g.heads, *g.rows)]
    right = g.right
    lines = []
    if doc.title:
        lines.append(visible(doc.title))
    lines.append("┏" + "┳".join("━" * (w + 2) for w in widths) + "┓")
    lines.append("┃ " + " ┃ ".join(_pad(h, w, r, measure) for h, w, r in zip(g.heads, widths, right)) + " ┃")
    lines.append("┡" + "╇".join("━" * (w + 2) for w in widths) + "┩")
    if simple:
        # %-formatting pads a str as str.format does, in half the time (10^4 rows)
        fmt = "│ " + " │ ".join("%%%ds" % w if r else "%%-%ds" % w for w, r in zip(widths, right)) + " │"
        lines.extend([fmt % tuple(r) for r in g.rows])
    else:
        lines.extend("│ " + " │ ".join(_pad(c, w, r, measure) for c, w, r in zip(row, widths, right)) + " │" for row in g.rows)
    lines.append("└" + "┴".join("─" * (w + 2) for w in widths) + "┘")
    lines.extend(run_files(doc, visible))
    if doc.totals:
        summary = [(visible(k), visible(v)) for k, v in summary_lines(doc.totals)]
        kw = max(width(k) for k, _ in summary)
        vw = max(width(v) for _, v in summary)
        lines.extend(_pad(k, kw, False, width) + "  " + _pad(v, vw, True, width) for k, v in summary)
    text = "\n".join(lines) + "\n"
    write(text if is_unicode(encoding) else encodable(text, encoding))


def run_files(doc: Document, prep: Callable[[str], str]) -> list[str]:
    """``name: path`` for each of the run's own files (an overview, a contact sheet), whole."""
    return [f"{prep(k)}: {prep(v)}" for k, v in (doc.files or {}).items() if v]


def _pad(text: str, w: int, right: bool, measure: Callable[[str], int] = width) -> str:
    gap = " " * max(0, w - measure(text))
    return gap + text if right else text + gap


# ----------------------------------------------------------------------------- terminals


def terminal_width(stream: Any) -> int:
    """Columns of the terminal ``stream`` is on; COLUMNS in the environment wins, as in
    shutil.get_terminal_size and rich."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        return 80


def use_color(stream: Any) -> bool:
    return "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def _box_width(widths: list[int]) -> int:
    return sum(widths) + 3 * len(widths) + 1


def _words_width(text: str) -> int:
    return max((width(w) for w in text.split()), default=0)


def fit_widths(g: Grid, rows: list[list[str]], limit: int) -> list[int] | None:
    """Column widths that fit ``limit``: full headers if they fit, else headers on several
    lines; None when even that is too wide."""
    need = [max([0, *(width(r[j]) for r in rows)]) for j in range(len(g.heads))]
    full = [max(n, width(h)) for n, h in zip(need, g.heads)]
    if _box_width(full) <= limit:
        return full
    wrapped = [max(n, _words_width(h), 1) for n, h in zip(need, g.heads)]
    if _box_width(wrapped) <= limit:
        # give the room left back to the headers that were wrapped, narrowest loss first
        room = limit - _box_width(wrapped)
        for j in sorted(range(len(wrapped)), key=lambda j: full[j] - wrapped[j]):
            extra = min(room, full[j] - wrapped[j])
            wrapped[j] += extra
            room -= extra
        return wrapped
    return None


def shrink(g: Grid, rows: list[list[str]], limit: int, ellipsis: str,
           apart: bool = True) -> tuple[list[list[str]], list[int]] | None:
    """Shorten the text columns in the middle until the table fits ``limit``: the longest
    first (most often the names), each to no fewer than _MIN_SHRUNK cells, so that short op
    types stay whole as long as a long name can give room. With ``apart``, cells that differ
    stay different (cnncli.render.text.shorten_distinct): None when they cannot at this width."""
    need = [max([0, *(width(r[j]) for r in rows)]) for j in range(len(g.heads))]
    base = [max(n, _words_width(h), 1) for n, h in zip(need, g.heads)]
    can = [g.shrinkable(j) for j in range(len(g.kinds))]
    floor = [max(_words_width(h), min(n, _MIN_SHRUNK)) if c else b for h, n, c, b in zip(g.heads, need, can, base)]
    widths = list(base)
    while _box_width(widths) > limit:
        candidates = [j for j in range(len(widths)) if can[j] and widths[j] > floor[j]]
        if not candidates:
            return None
        j = max(candidates, key=lambda j: widths[j])
        widths[j] -= 1
    columns = [[r[j] for r in rows] for j in range(len(widths))]
    for j, w in enumerate(widths):
        if can[j] and w < need[j]:
            cut = shorten_distinct(columns[j], w, ellipsis) if apart else None
            if cut is None and apart:
                return None
            columns[j] = cut or [shorten_middle(c, w, ellipsis) for c in columns[j]]
    return [list(r) for r in zip(*columns)], widths


def hide_until_apart(g: Grid, limit: int, ellipsis: str) -> tuple[Grid, list[int], tuple] | None:
    """When the table fits only with names shortened until some read the same: the columns at
    the right left out (never numbers of the int kind, never the first two) one by one until the
    names stay apart. (the grid, the indexes left out, shrink's answer), or None."""
    gone: set[int] = set()
    order = [j for j in range(len(g.heads) - 1, 1, -1) if g.kinds[j] != "int"]
    for j in order:
        gone.add(j)
        less = g.without(gone)
        fitted = fit_widths(less, less.units, limit)
        if fitted is not None:
            return less, sorted(gone), (less.units, fitted)
        fitted = shrink(less, less.units, limit, ellipsis)
        if fitted is not None:
            return less, sorted(gone), fitted
    return None


def _header_lines(heads: list[str], widths: list[int]) -> list[list[str]]:
    split = [textwrap.wrap(h, w, break_long_words=True) or [""] for h, w in zip(heads, widths)]
    depth = max(len(s) for s in split)
    return [[(s[len(s) - depth + i] if i >= depth - len(s) else "") for s in split] for i in range(depth)]


def boxed(title_lines: list[str], heads: list[str], rows: list[list[str]], widths: list[int], right: list[bool],
          bold: bool) -> list[str]:
    b0, b1 = ("\x1b[1m", "\x1b[0m") if bold else ("", "")
    lines = list(title_lines)
    lines.append("┏" + "┳".join("━" * (w + 2) for w in widths) + "┓")
    for hl in _header_lines(heads, widths):
        lines.append("┃ " + " ┃ ".join(b0 + _pad(h, w, r) + b1 for h, w, r in zip(hl, widths, right)) + " ┃")
    lines.append("┡" + "╇".join("━" * (w + 2) for w in widths) + "┩")
    for row in rows:
        lines.append("│ " + " │ ".join(_pad(c, w, r) for c, w, r in zip(row, widths, right)) + " │")
    lines.append("└" + "┴".join("─" * (w + 2) for w in widths) + "┘")
    return lines


def records(g: Grid, limit: int, ellipsis: str, bold: bool) -> list[str]:
    """Each row as ``header value`` pairs packed into lines of ``limit`` cells (the first line of
    a record flush left, the others indented); empty cells left out."""
    b0, b1 = ("\x1b[1m", "\x1b[0m") if bold else ("", "")
    lines: list[str] = []
    indent = "  "
    for i, row in enumerate(g.rows):
        items = []
        for j, text in enumerate(row):
            if text == "":
                continue
            head = g.heads[j]
            if width(head) + 1 + width(text) > limit - len(indent) and g.units is not None and g.kinds[j] == "int":
                text = g.units[i][j]
            if g.shrinkable(j):
                text = shorten_middle(text, max(_MIN_SHRUNK, limit - len(indent) - width(head) - 1), ellipsis)
            items.append((head, text))
        line, used, fresh = "", 0, True
        for head, text in items:
            w = width(head) + 1 + width(text)
            if not fresh and used + 2 + w > limit:
                lines.append(line)
                line, used, fresh = indent, len(indent), True
            if not fresh:
                line += "  "
                used += 2
            line += f"{b0}{head}{b1} {text}"
            used += w
            fresh = False
        lines.append(line)
    return lines


def summary_block(totals: dict[str, Any], limit: int, prep: Callable[[str], str], bold: bool) -> list[str]:
    b0, b1 = ("\x1b[1m", "\x1b[0m") if bold else ("", "")
    summary = [(prep(k), prep(v)) for k, v in summary_lines(totals)]
    kw = max(width(k) for k, _ in summary)
    fits = [width(v) for _, v in summary if kw + 2 + width(v) <= limit]
    vw = max(fits, default=0)
    lines = []
    for k, v in summary:
        if kw + 2 + width(v) <= limit:  # keys in one column, values right-aligned after them
            lines.append(b0 + _pad(k, kw, False) + b1 + "  " + _pad(v, vw, True))
            continue
        lines.append(b0 + k + b1)  # the value under its key, broken after commas if need be
        line = "  "
        for p in v.split(", "):
            if line.strip() and width(line) + 2 + width(p) > limit:
                lines.append(line + ",")
                line = "  "
            line += (", " if line.strip() else "") + p
        lines.append(line)
    return lines


def paths_below(doc: Document, g: Grid, names: list[str], prep: Callable[[str], str]) -> list[str]:
    """The paths of the fields ``names`` (kind "files": a dict of paths), one a line and whole,
    each after its row's first cell (unless that is a path too, which would only make the line
    wrap): what a terminal too narrow for them gets under the table."""
    lines, named = [], g.kinds[0] not in ("path", "files")
    for r, row in zip(doc.rows, g.rows):
        for name in names:
            value = getattr(r, name)
            paths = cell_parts(value, "files") or [value]  # a row's files, or one path
            lines.extend(f"{g.heads[0]} {row[0]}: {prep(str(p))}" if named else prep(str(p)) for p in paths if p)
    return lines


def _title(doc: Document, prep: Callable[[str], str], limit: int) -> list[str]:
    """The title, wrapped at spaces (a path in it kept whole on a line where it fits one)."""
    if not doc.title:
        return []
    title = prep(doc.title)
    if width(title) <= limit:
        return [title]
    return textwrap.wrap(title, limit, break_on_hyphens=False) or [""]


def terminal_table(doc: Document, picked: list[int], write: Write, limit: int, encoding: str | None,
                   bold: bool = False) -> list[str]:
    """The table laid out for a terminal ``limit`` cells wide (see the module's docstring).
    Paths are never shortened: a table with paths that does not fit lists them under it.
    Returns the headers of the columns it left out to keep the names apart."""
    limit = max(limit, 20)
    prep = _preparer(encoding) or (lambda s: s)
    ellipsis = "…" if is_unicode(encoding) else "..."
    g = grid(doc, picked, prep, with_units=True)
    title, below, hidden = _title(doc, prep, limit), [], []
    body: list[str] | None = None
    paths = [j for j, k in enumerate(g.kinds) if k == "files"]
    for attempt in ("all", "paths below"):
        if attempt == "paths below":
            if not paths or len(paths) == len(g.heads):
                break
            names = [column_names(doc.row_type)[picked[j]] for j in paths]
            below, g = paths_below(doc, g, names, prep), g.without(set(paths))
        for rows in (g.rows, g.units):
            widths = fit_widths(g, rows, limit)
            if widths is not None:
                body = boxed(title, g.heads, rows, widths, g.right_terminal, bold)
                break
        if body is not None:
            break
    if body is None:
        fitted = shrink(g, g.units, limit, ellipsis)
        if fitted is None and shrink(g, g.units, limit, ellipsis, apart=False) is not None:
            hid = hide_until_apart(g, limit, ellipsis)  # it fits, but names would read the same
            if hid is not None:
                hidden = [g.heads[j] for j in hid[1]]
                g, fitted = hid[0], hid[2]
        if fitted is not None:
            rows, widths = fitted
            body = boxed(title, g.heads, rows, widths, g.right_terminal, bold)
    if body is None:
        body = title + records(g, limit, ellipsis, bold)
    body += below + run_files(doc, prep)
    if doc.totals:
        body += summary_block(doc.totals, limit, prep, bold)
    text = "\n".join(body) + "\n"
    write(text if is_unicode(encoding) else encodable(text, encoding))
    return hidden
