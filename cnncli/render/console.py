"""Messages for people go to stderr; stdout carries only data.

Every message is printed as text, never as rich markup (a node named ``[bold]x[/bold]`` or a
file ``a[/]b.onnx`` shows as is), on one line (line breaks become spaces, other control
characters visible escapes), in what the stderr encoding can take (ASCII spellings otherwise).
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def err_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, emoji=False, markup=False)


def one_line(message: object) -> str:
    """``message`` as one line of printable text, ready for stderr's encoding."""
    from cnncli.render.text import encodable, visible

    text = str(message)
    if not text.isprintable():
        text = text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ").replace("\t", " ")
        text = visible(text)
    return encodable(text, err_console().encoding)


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
