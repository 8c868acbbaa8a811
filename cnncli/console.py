"""Messages for people go to stderr; stdout carries only data."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def err_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def warn(message: str) -> None:
    err_console().print(f"[yellow]Warning:[/yellow] {message}", markup=True, soft_wrap=True)


def info(message: str) -> None:
    err_console().print(message, markup=False, soft_wrap=True)
