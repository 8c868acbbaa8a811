"""Output file names: readable, safe on every file system, short enough, and distinct per input.

A name is built from parts (model, input, target, options); each part is made safe (letters,
digits, ``_.-`` only) and, when long, cut to a readable head plus a short hash of the whole part,
so two long names that differ only at the end still differ, and no name passes the 255-byte limit
of common file systems (with room for the temporary-file prefix and suffix of atomic writes).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

PART_MAX = 48  # characters per part (model stem, input stem, tensor name)
NAME_MAX = 200  # whole file name, suffix included (255 minus the temp-file decoration)


def slug(text: str, fallback: str = "tensor") -> str:
    """``text`` with every run of characters other than ``A-Za-z0-9_.-`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or fallback


def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def part(text: str, fallback: str = "tensor", limit: int = PART_MAX) -> str:
    """A safe file-name part of at most ``limit`` characters (a head and a hash of the whole)."""
    s = slug(text, fallback)
    if len(s) <= limit:
        return s
    return f"{s[: limit - 9].rstrip('_.-')}-{short_hash(text)}"


def stem_of(source: str, fallback: str = "input") -> str:
    """The stem of a path as a name part: 'photos/cat.jpg' → 'cat', '<stdin>' or '-' → 'stdin'."""
    if source in ("-", "<stdin>"):
        return "stdin"
    return part(Path(source).stem or Path(source).name, fallback)


def images_stem(spec: str) -> str:
    """A name part for a set of images given as a folder, a glob, a list file or '-'."""
    if spec == "-":
        return "stdin"
    cut = min((spec.index(c) for c in "*?[" if c in spec), default=None)
    if cut is not None:  # a glob: the folder it searches
        spec = spec[:cut].rstrip("/\\") or "."
    p = Path(spec)
    name = p.stem if p.suffix else p.name
    if not name or name in (".", ".."):
        name = Path.cwd().name if spec in ("", ".") else Path(spec).resolve().name
    return part(name, "images")


def join(*parts: str) -> str:
    return "_".join(p for p in parts if p)


def fits(name: str) -> bool:
    return len(name.encode("utf-8")) <= NAME_MAX
