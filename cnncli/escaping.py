"""The one escaping function for text shown to people: every name from a file (tensor, node,
metadata, image file name), path or argument goes through :func:`visible` before it reaches a
terminal (error, warning and progress lines, tables, CSV on a terminal) or a figure's title.

Escaped (shown as ``\\n``, ``\\r``, ``\\t``, ``\\e``, ``\\x9b``, ``\\u202e``, ``\\udcff``):

- C0 controls, DEL and C1 controls: they move the cursor, ring the bell, or start a terminal
  sequence (ESC ``]52;…`` writes the clipboard, ESC ``[2J`` clears the screen, ESC ``P`` opens a
  DCS, ``\\x9b`` is an 8-bit CSI);
- the line and paragraph separators U+2028, U+2029;
- the bidirectional controls U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069: they reorder
  the text shown around them (U+202E makes ``exe.png`` out of ``gnp.exe``);
- lone surrogates (the undecodable bytes of a path): not text, and no UTF-8 stream takes them.

Kept as they are: every printable character, and the other invisible format characters (zero
width joiner and non-joiner, zero width space, soft hyphen): words in Persian or Indic scripts
and emoji sequences need the joiners, and none of them moves the cursor or reorders other text.
"""

from __future__ import annotations

import re

# the characters visible() escapes, as a regular-expression class body (Markdown's fast path uses it)
ESCAPED_CLASS = "\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_ESCAPED = re.compile(f"[{ESCAPED_CLASS}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}


def _escape(match: re.Match) -> str:
    ch = match.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with the characters listed in this module's docstring written as escapes (a
    newline as ``\\n``, ESC as ``\\e``, U+202E as ``\\u202e``): a name from a model can neither
    break a line, nor send the terminal an escape sequence, nor reorder what is shown around
    it. Everything else, markup-like brackets included, is kept verbatim."""
    if text.isprintable():  # no control, separator or format character: nothing to escape
        return text
    return _ESCAPED.sub(_escape, text)


def one_line(message: object) -> str:
    """``str(message)`` on one line of escaped text: its line breaks (an onnx or OS message may
    span several lines) joined with spaces, then :func:`visible`."""
    text = str(message)
    if text.isprintable():
        return text
    text = " ".join(part.strip(" \t\r") for part in text.replace("\r\n", "\n").split("\n") if part.strip(" \t\r"))
    return visible(text)
