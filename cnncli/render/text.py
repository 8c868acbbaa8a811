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


def shorten_middle(text: str, limit: int, ellipsis: str = "…", head: float = 1 / 3) -> str:
    """``text`` cut to at most ``limit`` cells by replacing its middle with ``ellipsis``,
    keeping ``head`` of the room for the start (a third by default) and the rest for the end
    (where layer names differ: ``/layer1/layer1.0/conv1/Conv``)."""
    if width(text) <= limit:
        return text
    room = limit - width(ellipsis)
    if room <= 0:
        return ellipsis[:limit]
    head_room = int(room * head)
    tail_room = room - head_room
    if text.isascii():
        return text[:head_room] + ellipsis + (text[len(text) - tail_room:] if tail_room else "")
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


_SPLITS = (1 / 3, 1 / 2, 2 / 3, 1 / 5, 4 / 5, 0.0, 1.0)  # shares of the room kept for the start, in order of preference


def shorten_distinct(texts: list[str], limit: int, ellipsis: str = "…") -> list[str] | None:
    """Each text shortened in the middle to at most ``limit`` cells, at one split of the room
    between start and end (a third for the start if that keeps them apart, else the first of
    _SPLITS that does), so that texts that differ stay different: ``/model.1/conv/Conv`` and
    ``/model.10/conv/Conv`` are not both ``/mo…nv/Conv``. None when no split keeps them apart
    at this width."""
    distinct = set(texts)
    for head in _SPLITS:
        out = [shorten_middle(t, limit, ellipsis, head) for t in texts]
        if len(set(out)) == len(distinct):
            return out
    return None


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
