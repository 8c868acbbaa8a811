"""What every command's ``run`` returns and how it reports along the way.

- :class:`Warnings`: the run's warnings, in order, each once: cnncli's own and the Python warnings
  raised while it ran (numpy's, Pillow's, onnxruntime's), in the texts the CLI prints. The CLI
  passes ``on_warning`` to print each as it comes; Python callers read ``result.warnings``
  (and get each as a :class:`cnncli.errors.CnnWarning` when they passed no ``on_warning``).
- :class:`Result`: ``document()`` (the rows, meta and totals the one renderer writes),
  ``to_dict()`` (what ``--format json`` prints), ``str()`` (the table), ``_repr_html_()``
  (a notebook table), ``warnings`` and ``files`` (every file the run wrote).
"""

from __future__ import annotations

import io
import warnings as _warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from cnncli.errors import CnnWarning, warning_text

Hear = Callable[[str], None]


class Warnings(list):
    """The warnings of one run (a list of texts), each told to ``hear`` as it comes."""

    def __init__(self, hear: Hear | None = None):
        super().__init__()
        self.hear = hear

    def add(self, text: str | None) -> None:
        if not text or text in self:
            return
        self.append(text)
        if self.hear is not None:
            self.hear(text)

    @contextmanager
    def capturing(self) -> Iterator["Warnings"]:
        """Within the block, Python warnings that would be shown are added here instead; after
        it, a caller that listens to nothing gets them back as CnnWarnings."""
        with _warnings.catch_warnings():
            def show(message, category, filename, lineno, file=None, line=None) -> None:
                self.add(warning_text(message, category))

            _warnings.showwarning = show
            yield self
        if self.hear is None:
            for text in self:
                _warnings.warn(CnnWarning(text), stacklevel=4)


class Result:
    """Mixin of every command's result. A subclass sets ``warnings`` and ``files`` and defines
    :meth:`document`."""

    warnings: list[str]
    files: list[str]

    def document(self):
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The document ``--format json`` prints, as plain Python values."""
        from cnncli.render import to_json_value

        doc = self.document()
        out = {**to_json_value(doc.meta), doc.rows_key: to_json_value(list(doc.rows))}
        if doc.totals is not None:
            out["totals"] = to_json_value(doc.totals)
        return out

    def render(self, fmt: str = "table", columns=None, wide: bool = False) -> str:
        """The output of the command in ``fmt`` (table, json, jsonl, csv, markdown), as text."""
        from cnncli.render import render

        out = io.StringIO()
        render(self.document(), fmt, out, columns=columns, wide=wide, warn=lambda _: None, note=lambda _: None)
        return out.getvalue()

    def __str__(self) -> str:
        return self.render("table")

    def _repr_html_(self) -> str:
        from cnncli.render.html import document_html

        return document_html(self.document())
