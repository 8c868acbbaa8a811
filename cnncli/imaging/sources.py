"""Where `cnn top` finds its images: a folder (recursive), a glob, a text file of paths, or stdin.

Each file comes at most once, by its resolved path: a symlink to an image already listed, a
path repeated in a list file (or spelt differently: ``./a.png``, ``a.png``) and the endless
paths of a symlink loop name one file, which must not fill several of a channel's top k.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import os
import stat
import sys
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, TextIO

from cnncli.bundled import IMAGE_SUFFIXES
from cnncli.errors import CnnError

GLOB_CHARS = set("*?[")


def iter_image_paths(spec: str, stdin: TextIO | None = None) -> Iterator[str]:
    """Paths in a stable order, streamed (a list of 100,000 paths is never materialised twice),
    each file once (see :func:`unique_paths`)."""
    return unique_paths(_iter_listed(spec, stdin))


def unique_paths(paths: Iterable[str]) -> Iterator[str]:
    """``paths`` without the ones naming a file already given (compared by resolved path:
    symlinks followed, ``.`` and ``..`` removed); the first spelling is kept."""
    seen: set[str] = set()
    for p in paths:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            yield p


def _iter_listed(spec: str, stdin: TextIO | None) -> Iterator[str]:
    if spec == "-":
        stream = stdin if stdin is not None else sys.stdin
        if stream is None:  # `cnn top m.onnx - <&-`: Python has no sys.stdin
            raise CnnError("cannot read image paths from standard input: it is closed")
        yield from _lines(stream)
        return
    path = Path(spec)
    if path.is_dir():
        for p in sorted(path.rglob("*")):  # rglob does not follow symlinked folders: no loops
            if p.suffix.lower() in IMAGE_SUFFIXES and _listed(p):
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
        if "**" in spec:
            yield from _recursive_glob(spec)
        else:
            yield from (m for m in sorted(glob.glob(spec)) if _listed(m))
        return
    raise CnnError(f"no such file, folder or glob: '{spec}'")


def _listed(path) -> bool:
    """A folder or glob lists every file that is there, a FIFO or device too (the decoder
    refuses those, reported with the other unreadable images), but no folder and no broken link."""
    return os.path.exists(path) and not os.path.isdir(path)


class NotRegularFile(OSError):
    """A path that names a FIFO, a socket or a device, not a file."""

    def __init__(self, path):
        super().__init__(errno.EINVAL, "not a regular file", str(path))


def open_regular(path) -> BinaryIO:
    """``path`` opened for reading when it is a regular file (links followed), else
    :class:`NotRegularFile` (IsADirectoryError for a folder), without ever blocking: opening a FIFO
    waits for a writer, and /dev/zero or /dev/tty never end. Every image and .npy input (the local
    and the Ray engines' decoder, `cnn project`, `cnn features`) is opened through here."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "it is a directory", str(path))
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _recursive_glob(spec: str) -> Iterator[str]:
    """glob's ``**`` (any number of folders), walking every real folder once: glob.glob follows
    symlinked folders into loops (two links back up double the paths at every level)."""
    parts = spec.split(os.sep)
    fixed = 0
    while fixed < len(parts) - 1 and not GLOB_CHARS & set(parts[fixed]):
        fixed += 1
    root = os.sep.join(parts[:fixed]) or (os.sep if fixed else ".")
    pattern = [p for p in parts[fixed:] if p]
    found, visited = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        visited.add(os.path.realpath(folder))
        dirs[:] = sorted(d for d in dirs if os.path.realpath(os.path.join(folder, d)) not in visited)
        rel = os.path.relpath(folder, root)
        rel_parts = [] if rel == "." else rel.split(os.sep)
        for name in files:
            full = os.path.join(folder, name)
            if _match(rel_parts + [name], pattern) and _listed(full):
                found.append(full[2:] if root == "." else full)  # "./a/b.png" as glob spells it: "a/b.png"
    return iter(sorted(found))


def _match(names: list[str], pattern: list[str]) -> bool:
    """Path components against glob components, '**' matching any number of folders (hidden
    names only where the component itself starts with a dot, as glob does)."""
    if not pattern:
        return not names
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(names[i:], rest) for i in range(len(names) + 1)
                   if all(not n.startswith(".") for n in names[:i]))
    if not names:
        return False
    if names[0].startswith(".") and not head.startswith("."):
        return False
    return fnmatch.fnmatchcase(names[0], head) and _match(names[1:], rest)


def _lines(stream) -> Iterator[str]:
    for line in stream:
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def skipped_text(skipped: list[str], reasons: dict[str, str] | None = None, first: int = 3) -> str:
    """The first few skipped images with why, e.g. "'a.png' (no such file), 'b.jpg' (not an
    image Pillow can read) and 3 more"."""
    reasons = reasons or {}
    named = [f"'{p}'" + (f" ({reasons[p]})" if p in reasons else "") for p in skipped[:first]]
    more = len(skipped) - len(named)
    return ", ".join(named) + (f" and {more} more" if more > 0 else "")
