"""The images `cnn top` reads and the files it writes: IMAGES as paths (with their identity in the
file names, cnncli.imaging.naming), and per channel a grid PNG, then an overview of all of them.

Names: ``<model>_<images>-<hash>_layer<N>_c<channel>_top<k>_<mode>.png`` and
``<model>_<images>-<hash>_layer<N>_top<k>_<mode>_overview-<hash of the channels>.png``; the first
hash covers the model, the images (a folder, glob or list file by its resolved path; paths on
standard input or from Python by the list read) and the preprocessing and size.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Iterable

from cnncli.api.options import path
from cnncli.errors import BadArgument

if TYPE_CHECKING:
    from cnncli.api.top import TopChannel, TopJob


class Listed:
    """Paths given on standard input or as a Python list, hashed as they pass: the images'
    identity in the file names (cnncli.imaging.naming), known once the scan has read them all."""

    def __init__(self, paths: Iterable[str]):
        import hashlib

        self._it, self._hash = iter(paths), hashlib.sha1()

    def __iter__(self) -> "Listed":
        return self

    def __next__(self) -> str:
        path = next(self._it)
        self._hash.update(os.path.realpath(path).encode("utf-8", "surrogatepass") + b"\0")
        return path

    def identity(self) -> str:
        return "list:" + self._hash.hexdigest()


def listed_paths(images: Any, stdin=None) -> tuple[Iterable[str], str, Callable[[], str]]:
    """(the paths, a label for them, their identity in the file names once they are read)."""
    from cnncli.imaging.naming import path_identity
    from cnncli.imaging.sources import iter_image_paths, unique_paths

    if isinstance(images, (str, os.PathLike)):
        spec = path(optional=False)("IMAGES", images)
        paths = iter_image_paths(spec, stdin)
        if spec != "-":
            return paths, spec, lambda: path_identity(spec)
    else:
        try:
            paths = list(unique_paths(path(optional=False)("IMAGES", p) for p in images))
        except (TypeError, BadArgument):
            raise BadArgument("IMAGES", "give a folder, a glob, a list file, '-', or a list of paths") from None
        spec = f"<{len(paths)} paths>"
    listed = Listed(paths)
    return listed, spec, listed.identity



class GridWriter:
    """`cnn top`'s files: per channel its k projections beside their k patches, and an overview."""

    def __init__(self, job: "TopJob", out: str, images_label: str):
        from pathlib import Path

        self.job, self.out, self.tiles, self.label, self._prefix = job, Path(out), [], images_label, None

    @property
    def prefix(self) -> str:
        """'<model>_<images>-<hash>_layer<N>', fixed once the scan has listed the images."""
        from cnncli.imaging.naming import identified, images_stem, stem_of

        if self._prefix is None:
            images = identified(images_stem(self.label), *self.job.identity())
            self._prefix = f"{stem_of(self.job.model.name, 'model')}_{images}_layer{self.job.options.layer}"
        return self._prefix

    @property
    def norm_tag(self) -> str:
        """'_norm-grey' where --norm is not the default (as `cnn project` names it), so the two
        renderings of one scan keep their own files."""
        o = self.job.options
        return "" if o.norm == type(o).default("norm") else f"_norm-{o.norm}"

    def channel(self, ch: "TopChannel") -> dict[str, str]:
        import numpy as np

        from cnncli.atomic import ensure_dir
        from cnncli.imaging.montage import titled
        from cnncli.imaging.pictures import grid, save_png, side_by_side

        o = self.job.options
        rf = self.job.rf
        tile = int(min(128, max(64, rf[0].size if rf else 64)))
        cols = max(1, int(np.ceil(np.sqrt(len(ch.entries)))))  # what there is: a -k past the images adds no room
        figure = titled(side_by_side(grid(ch.tiles(o.norm), cols, tile), grid(ch.patches, cols, tile)),
                             f"layer {o.layer} channel {ch.channel}: top {len(ch.entries)} (projection | patch)")
        ensure_dir(self.out)
        path = save_png(figure, self.out / f"{self.prefix}_c{ch.channel}_top{o.k}_{o.mode}{self.norm_tag}.png")
        self.tiles.append(figure)
        return {"grid": str(path)}

    def overview(self) -> str:
        from cnncli.imaging.montage import packed
        from cnncli.imaging.naming import short_hash
        from cnncli.imaging.pictures import save_png

        o = self.job.options
        chosen = short_hash(",".join(map(str, self.job.channels)))  # another set of channels: another overview
        name = f"{self.prefix}_top{o.k}_{o.mode}{self.norm_tag}_overview-{chosen}.png"
        # each channel's grid at its own size and aspect (no square cells), as many to a row as
        # make the whole about 16:10; their 16-pixel titles stay legible
        return str(save_png(packed(self.tiles, gap=16), self.out / name))
