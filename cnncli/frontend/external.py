"""Where a model's external data may be read from: only files inside the model's own folder.

A location is refused, before anything on disk is looked at, when it is absolute or climbs out
with ``..``; then, for the rest, when the path resolves (through symlinks) outside the folder.
The check is cnncli's own, so it holds whatever onnx version is installed (onnx 1.15 follows a
symlinked data file) and gives one line instead of onnx's ValidationError.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from cnncli.errors import ModelError

_DRIVE = re.compile(r"^[A-Za-z]:")


def escapes_lexically(location: str) -> str | None:
    """Why ``location`` is refused from its text alone (no file system access), or None."""
    if not location:
        return "it is empty"
    if "\x00" in location:
        return "it contains a NUL byte"
    text = location.replace("\\", "/")
    if text.startswith("/") or _DRIVE.match(text) or os.path.isabs(location):
        return "it is an absolute path"
    depth = 0
    for part in PurePosixPath(text).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return "it climbs out of the model's folder with '..'"
        elif part not in (".", ""):
            depth += 1
    return None


def check_locations(locations: list[str], base_dir: Path | None, name: str) -> None:
    """Refuse the model when any external data location lies outside ``base_dir``.

    Locations are first judged by their text alone; only those that stay inside are resolved
    (through ``base_dir`` and symlinks inside it) to catch a link that points outside.
    """
    for location in locations:
        why = escapes_lexically(location)
        if why is not None:
            raise ModelError(
                f"'{name}' keeps external data at '{location}', outside the model's folder ({why}); refusing to read it"
            )
    if base_dir is None:
        return
    root = os.path.realpath(base_dir)
    for location in locations:
        real = os.path.realpath(os.path.join(root, location))
        if os.path.commonpath([root, real]) != root:
            raise ModelError(
                f"'{name}' keeps external data at '{location}', which resolves outside the model's folder "
                "(a symbolic link); refusing to read it"
            )
