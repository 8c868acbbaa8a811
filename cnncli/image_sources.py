"""Where `cnn top` finds its images: a folder (recursive), a glob, a text file of paths, or stdin."""

from __future__ import annotations

import glob
import sys
from pathlib import Path
from typing import Iterator, TextIO

from cnncli.bundled import IMAGE_SUFFIXES
from cnncli.errors import CnnError

GLOB_CHARS = set("*?[")


def iter_image_paths(spec: str, stdin: TextIO | None = None) -> Iterator[str]:
    """Paths in a stable order, streamed (a list of 100,000 paths is never materialised twice)."""
    if spec == "-":
        stream = stdin if stdin is not None else sys.stdin
        yield from _lines(stream)
        return
    path = Path(spec)
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                yield str(p)
        return
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            yield str(path)
            return
        try:
            with open(path, encoding="utf-8") as f:
                yield from _lines(f)
        except UnicodeDecodeError:
            raise CnnError(f"'{spec}' is neither an image nor a text file of image paths") from None
        return
    if GLOB_CHARS & set(spec):
        matches = sorted(glob.glob(spec, recursive=True))
        yield from (m for m in matches if Path(m).is_file())
        return
    raise CnnError(f"no such file, folder or glob: '{spec}'")


def _lines(stream) -> Iterator[str]:
    for line in stream:
        line = line.strip()
        if line and not line.startswith("#"):
            yield line
