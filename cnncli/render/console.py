"""Messages for people go to stderr; stdout carries only data.

Every message is printed as text, never as rich markup (a node named ``[bold]x[/bold]`` or a
file ``a[/]b.onnx`` shows as is), on one line (line breaks become spaces, other control and bidi
characters visible escapes: ``cnncli.escaping``), in what the stderr encoding can take (ASCII
spellings otherwise). The `Error: …` line of the CLI goes through the same ``one_line``.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def err_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, emoji=False, markup=False)


def one_line(message: object) -> str:
    """``message`` as one line of escaped text (``cnncli.escaping.one_line``: line breaks joined,
    control and bidi characters as visible escapes), ready for stderr's encoding."""
    from cnncli.escaping import one_line as escaped
    from cnncli.render.text import encodable

    return encodable(escaped(message), err_console().encoding)


def _print(text) -> None:
    try:
        err_console().print(text, soft_wrap=True, markup=False, emoji=False, highlight=False)
    except (BrokenPipeError, ValueError):  # stderr gone: nothing more to tell anyone
        pass


def warn(message: object) -> None:
    from rich.text import Text

    _print(Text.assemble(("Warning:", "yellow"), " ", one_line(message)))


def info(message: object) -> None:
    from rich.text import Text

    _print(Text(one_line(message)))
