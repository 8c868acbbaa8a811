"""The files a report writes into its folder, and its manifest: a run replaces its own pictures and
removes those the new page no longer shows, and never touches a file it did not make.
Image names: each image's own safe, distinct file-name part; the pictures, written as the page shows them."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

from cnncli.errors import BadArgument

MANIFEST = ".cnn-report-files.json"  # what the last run wrote, relative to the folder (`cnn demo`: its own name)
_OWN = re.compile(r"(?:img/[^/\\]+\.png|index\.html|stats\.json)")  # the only names a report writes


def read_manifest(out: Path, manifest: str = MANIFEST) -> list[str]:
    """The files a previous run wrote into ``out`` (relative paths); [] when there is none.
    A manifest that is a symlink, not JSON, or not a list of names is ignored with one warning
    (nothing is removed on its word)."""
    import warnings

    from cnncli.errors import CnnWarning

    path = out / manifest
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return []
    except OSError as exc:  # ELOOP: the manifest is a symlink
        reason = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        warnings.warn(CnnWarning(f"ignoring '{path}' ({reason}): no previous file removed"))
        return []
    try:
        with os.fdopen(fd, "rb") as f:
            names = json.loads(f.read(1 << 20).decode("utf-8"))
    except (OSError, ValueError) as exc:
        names = exc
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        warnings.warn(CnnWarning(f"ignoring '{path}': not a list of file names; no previous file removed"))
        return []
    return names


def check_own_pages(out: Path, previous: list[str]) -> None:
    """Refuse, before any picture, a folder whose index.html or stats.json no earlier run listed:
    the user's own page, which this run would replace."""
    from cnncli.errors import CnnError

    for name in ("index.html", "stats.json"):
        if os.path.lexists(out / name) and name not in previous:
            raise CnnError(f"'{out / name}' was not written by an earlier run: give --out a folder of its own")


def remove_own_file(out: Path, name: str) -> bool:
    """Remove ``out/name`` when it is one of a report's own names (``index.html``, ``stats.json``,
    ``img/*.png``) and a regular file reached without leaving the folder: no absolute path, no
    ``..``, no symlink in any component (the folders are opened one by one without following
    links, and the file removed through them, so a link swapped in meanwhile cannot redirect it)."""
    import stat

    if not _OWN.fullmatch(name) or "\0" in name:
        return False
    *folders, leaf = name.split("/")
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
    fds = []
    try:
        fds.append(os.open(out, flags & ~getattr(os, "O_NOFOLLOW", 0)))  # --out itself may be a link the user made
        for folder in folders:
            fds.append(os.open(folder, flags, dir_fd=fds[-1]))
        if not stat.S_ISREG(os.stat(leaf, dir_fd=fds[-1], follow_symlinks=False).st_mode):
            return False
        os.unlink(leaf, dir_fd=fds[-1])
        return True
    except (OSError, NotImplementedError):  # gone, a link, not a folder, or no dir_fd here: left alone
        return False
    finally:
        for fd in reversed(fds):
            os.close(fd)


def replace_manifest(out: Path, previous: list[str], files: list[str], manifest: str = MANIFEST) -> None:
    """Record this run's files, then remove the previous run's files this run did not write again:
    a run replaces its own outputs and never touches a file it did not make (see
    :func:`remove_own_file` for what it removes)."""
    from cnncli.atomic import write_bytes_atomic

    now = sorted({Path(os.path.relpath(f, out)).as_posix() for f in files})  # as written: out/img/…, out/index.html
    write_bytes_atomic(out / manifest, json.dumps(now, indent=0).encode("utf-8"))
    for name in sorted(set(previous) - set(now)):
        remove_own_file(out, name)


def image_names(paths: list[str]) -> dict[str, str]:
    """Each image path's file-name part: its stem made safe (cnncli.imaging.naming), with ``-2``,
    ``-3`` … after a stem an earlier path already took (``a/cat.png`` and ``b/cat.jpg``)."""
    from cnncli.imaging.naming import stem_of

    names: dict[str, str] = {}
    taken: set[str] = set()
    for p in paths:
        stem = base = stem_of(p, "image")
        n = 1
        while stem in taken:
            n += 1
            stem = f"{base}-{n}"
        taken.add(stem)
        names[p] = stem
    return names


class Pictures:
    """The page's picture files under ``out/img``: written atomically, listed, sized for the page."""

    def __init__(self, out: Path):
        from cnncli.atomic import ensure_dir

        self.out, self.files = out, []
        ensure_dir(out / "img")

    def save(self, array, name: str, alt: str, shown: int | None = None):
        """``array`` (uint8) as ``img/name``, shown with its longer side ``shown`` CSS px; stored at
        most twice that (sharp on a high-density screen, without megabytes per tile)."""
        from cnncli.imaging.pictures import resize_tile, save_png
        from cnncli.render.report_html import Picture

        if shown and max(array.shape[:2]) > 2 * shown:
            array = resize_tile(array, 2 * shown)
        self.files.append(str(save_png(array, self.out / "img" / name)))
        return Picture(f"img/{name}", int(array.shape[1]), int(array.shape[0]), alt, shown)

    def plot(self, fig, name: str, alt: str):
        from PIL import Image

        from cnncli.render.plot import save_png
        from cnncli.render.report_html import Picture

        path = self.out / "img" / name
        save_png(fig, path)
        self.files.append(str(path))
        with Image.open(path) as im:
            return Picture(f"img/{name}", im.width, im.height, alt)


def chosen_layers(spec: str | None, n: int) -> list[int]:
    """'1,3,5', 'all' or None (all) → the layer numbers, each from 1 to ``n``."""
    if n == 0:
        raise BadArgument("--layers", "the model has no Conv layers")
    if spec is None or spec.strip().lower() == "all":
        return list(range(1, n + 1))
    try:
        chosen = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        chosen = []
    if not chosen or any(not 1 <= c <= n for c in chosen):
        raise BadArgument("--layers", f"'{spec}': give layer numbers from 1 to {n} (the Conv layers as `cnn stats` "
                                      "numbers them), or 'all'")
    return sorted(set(chosen))
