"""Tables for people.

On a pipe or in a file: every column (or those picked), exact numbers, one line per row, so
grep, diff and cut keep working; the layout is the one rich printed (a heavy-headed box).

On a terminal: the columns that fit its width. The compact set of the row type by default
(``--columns`` to pick, ``--wide`` for all), then, as long as the table is too wide: headers on
two lines, numbers in human units (170.8M), long text shortened in the middle; and when even
that does not fit, each row as a record of ``header value`` pairs over a few lines. A number is
never split across lines.

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
from cnncli.render.document import Document, cells, column_names, headers, kinds, summary_lines
from cnncli.render.text import encodable, human, is_unicode, shorten_middle, width

Write = Callable[[str], Any]

_SHRINKABLE = ("text", "entries", "files")  # kinds whose cells may be shortened in the middle
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
        fmt = "│ " + " │ ".join("{:>%d}" % w if r else "{:<%d}" % w for w, r in zip(widths, right)) + " │"
        lines.extend(fmt.format(*r) for r in g.rows)
    else:
        lines.extend("│ " + " │ ".join(_pad(c, w, r, measure) for c, w, r in zip(row, widths, right)) + " │" for row in g.rows)
    lines.append("└" + "┴".join("─" * (w + 2) for w in widths) + "┘")
    if doc.totals:
        summary = [(visible(k), visible(v)) for k, v in summary_lines(doc.totals)]
        kw = max(width(k) for k, _ in summary)
        vw = max(width(v) for _, v in summary)
        lines.extend(_pad(k, kw, False, width) + "  " + _pad(v, vw, True, width) for k, v in summary)
    text = "\n".join(lines) + "\n"
    write(text if is_unicode(encoding) else encodable(text, encoding))


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


def shrink(g: Grid, rows: list[list[str]], limit: int, ellipsis: str) -> tuple[list[list[str]], list[int]] | None:
    """Shorten the text columns in the middle until the table fits ``limit``: the others
    (op types, paths) first, widest first, then the first text column, which names the row."""
    need = [max([0, *(width(r[j]) for r in rows)]) for j in range(len(g.heads))]
    base = [max(n, _words_width(h), 1) for n, h in zip(need, g.heads)]
    can = [g.shrinkable(j) for j in range(len(g.kinds))]
    floor = [max(_words_width(h), min(n, _MIN_SHRUNK)) if c else b for h, n, c, b in zip(g.heads, need, can, base)]
    widths = list(base)
    while _box_width(widths) > limit:
        candidates = [j for j in range(len(widths)) if can[j] and widths[j] > floor[j]]
        if not candidates:
            return None
        first = next(j for j in range(len(can)) if can[j])
        j = max(candidates, key=lambda j: (j != first, widths[j]))
        widths[j] -= 1
    out = [[shorten_middle(c, widths[j], ellipsis) if can[j] else c for j, c in enumerate(r)] for r in rows]
    return out, widths


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


def terminal_table(doc: Document, picked: list[int], write: Write, limit: int, encoding: str | None,
                   bold: bool = False) -> None:
    """The table laid out for a terminal ``limit`` cells wide (see the module's docstring)."""
    limit = max(limit, 20)
    prep = _preparer(encoding) or (lambda s: s)
    ellipsis = "…" if is_unicode(encoding) else "..."
    g = grid(doc, picked, prep, with_units=True)
    title = [prep(doc.title)] if doc.title else []
    if title and width(title[0]) > limit:
        title = textwrap.wrap(title[0], limit, break_on_hyphens=False) or [""]
    body: list[str] | None = None
    for rows in (g.rows, g.units):
        widths = fit_widths(g, rows, limit)
        if widths is not None:
            body = boxed(title, g.heads, rows, widths, g.right_terminal, bold)
            break
    if body is None:
        fitted = shrink(g, g.units, limit, ellipsis)
        if fitted is not None:
            rows, widths = fitted
            body = boxed(title, g.heads, rows, widths, g.right_terminal, bold)
    if body is None:
        body = title + records(g, limit, ellipsis, bold)
    if doc.totals:
        body += summary_block(doc.totals, limit, prep, bold)
    text = "\n".join(body) + "\n"
    write(text if is_unicode(encoding) else encodable(text, encoding))
