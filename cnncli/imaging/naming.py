"""Output file names: readable, safe on every file system, short enough, and distinct per input.

A name is built from parts (model, input, target, options); each part is made safe (letters,
digits, ``_.-`` only) and, when long, cut to a readable head plus a short hash of the whole part,
so two long names that differ only at the end still differ, and no name passes the 255-byte limit
of common file systems (with room for the temporary-file prefix and suffix of atomic writes).

A stem alone does not tell inputs apart (``a/cat.png`` and ``b/cat.jpg``; ``猫.jpg`` and ``犬.png``,
which both become ``input``; ``x y.jpg`` and ``x_y.jpg``), so the part named after the inputs
ends in a short hash of what identifies them (:func:`identified`): a file by its resolved path,
data given in memory (bytes, an array, a picture, standard input) by a hash of its content. The
same input always gets the same names; another input, other names, in this run or any other.
"""

from __future__ import annotations

import hashlib
import os
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


def identified(stem: str, *identities: str) -> str:
    """``stem`` (a name part) followed by a short hash of ``identities`` (see :func:`path_identity`,
    :func:`data_identity`): 'cat' → 'cat-1f3a9c0b'."""
    return f"{stem}-{short_hash(chr(0).join(identities))}"


def path_identity(path: str) -> str:
    """A file or folder as its outputs are told apart: its resolved path (symlinks followed, so a
    link and its target are one input; the rest of a glob kept as written)."""
    return "path:" + os.path.realpath(path)


def data_identity(*chunks: bytes | str) -> str:
    """Data given in memory (model bytes, an array's bytes and shape) as its outputs are told apart."""
    h = hashlib.sha1()
    for chunk in chunks:
        h.update(chunk.encode("utf-8", "surrogatepass") if isinstance(chunk, str) else chunk)
        h.update(b"\0")
    return "data:" + h.hexdigest()
