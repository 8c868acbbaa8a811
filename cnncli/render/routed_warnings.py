"""Python warnings on the CLI's terms: one `Warning: …` line on stderr each, every distinct
message once. numpy's RuntimeWarnings (overflow, invalid value), Pillow's
DecompressionBombWarning and cnncli's own run warnings otherwise print two lines with a source
file path and a code line."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def routed_warnings() -> Iterator[None]:
    """Within the block, warnings that would be shown go through :func:`cnncli.render.console.warn`.
    The filters stay as Python sets them (DeprecationWarnings of libraries stay hidden)."""
    seen: set[tuple[type, str]] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        from cnncli.errors import warning_text
        from cnncli.render.console import warn

        text = warning_text(message, category)
        if (category, text) in seen:
            return
        seen.add((category, text))
        warn(text)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield
