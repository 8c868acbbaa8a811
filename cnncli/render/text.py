"""Text helpers for what cnncli writes for people: numbers in human units, display width,
shortening in the middle, and ASCII for streams that cannot take anything else. Control and
bidi characters are made visible by the one escaping function, ``cnncli.escaping.visible``
(re-exported here)."""

from __future__ import annotations

import codecs

from cnncli.escaping import visible  # noqa: F401  the one escaping function (in the base: imaging uses it too)

_UNITS = ("", "K", "M", "G", "T", "P", "E")


def human(value: int | float) -> str:
    """An integer in human units with one decimal: 999, 14.2K, 170.8M, 1.2G.

    Below 1,000 the exact integer; 999,950 rounds up to 1.0M, never 1000.0K.
    """
    n = abs(value)
    sign = "-" if value < 0 else ""
    if n < 1000:
        return f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"
    i = 0
    while n >= 999.95 and i < len(_UNITS) - 1:
        n /= 1000
        i += 1
    return f"{sign}{n:.1f}{_UNITS[i]}"


def width(text: str) -> int:
    """Terminal cells ``text`` takes (East Asian wide characters take two)."""
    if text.isascii():
        return len(text)
    from rich.cells import cell_len

    return cell_len(text)


def shorten_middle(text: str, limit: int, ellipsis: str = "…") -> str:
    """``text`` cut to at most ``limit`` cells by replacing its middle with ``ellipsis``,
    keeping a third of the room for the start and two thirds for the end (where layer names
    differ: ``/layer1/layer1.0/conv1/Conv``)."""
    if width(text) <= limit:
        return text
    room = limit - width(ellipsis)
    if room <= 0:
        return ellipsis[:limit]
    head_room = room // 3
    tail_room = room - head_room
    head, used = [], 0
    for ch in text:
        w = width(ch)
        if used + w > head_room:
            break
        head.append(ch)
        used += w
    tail, used = [], 0
    for ch in reversed(text):
        w = width(ch)
        if used + w > tail_room:
            break
        tail.append(ch)
        used += w
    return "".join(head) + ellipsis + "".join(reversed(tail))


_ASCII = str.maketrans({
    "…": "...", "×": "x", "·": "-", "—": "-", "–": "-", "−": "-", "→": "->", "←": "<-", "≤": "<=", "≥": ">=",
    "÷": "/", "±": "+/-", "²": "^2", "µ": "u", "‘": "'", "’": "'", "“": '"', "”": '"',
    "┏": "+", "┳": "+", "┓": "+", "┡": "+", "╇": "+", "┩": "+", "└": "+", "┴": "+", "┘": "+",
    "━": "-", "─": "-", "┃": "|", "│": "|",
})


def is_unicode(encoding: str | None) -> bool:
    """Whether a stream of this encoding can take any text (UTF-8, -16, -32)."""
    try:
        return codecs.lookup(encoding or "utf-8").name.startswith("utf")
    except LookupError:
        return False


def encodable(text: str, encoding: str | None) -> str:
    """``text`` as a stream of ``encoding`` can take it: unchanged where it can, else with
    typographic characters spelt in ASCII ('…' as '...', '×' as 'x', '·' as '-', box lines as
    +-|) and anything still unencodable as '?'."""
    enc = encoding or "utf-8"
    if is_unicode(enc):
        return text
    try:
        text.encode(enc)
        return text
    except (UnicodeEncodeError, LookupError):
        pass
    text = text.translate(_ASCII)
    try:
        return text.encode(enc, "replace").decode(enc)
    except LookupError:
        return text.encode("ascii", "replace").decode("ascii")
