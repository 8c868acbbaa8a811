"""What `cnn cam` reads: the images (one, or many as `cnn top` takes them, in batches), the layer
(``--layer N`` as `cnn stats` numbers them, or a tensor name) and the score (a class of an output,
or a channel of any tensor summed over space)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

from cnncli.errors import BadArgument, CnnError

if TYPE_CHECKING:
    import numpy as np


def layer_spec(flag_: str, value: Any) -> int | str | None:
    """--layer: a whole number (the N-th Conv) or a tensor name; '5' from the command line is 5."""
    from cnncli.api.options import integer, text

    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        value = int(value)
    if isinstance(value, str):
        return text()(flag_, value)
    return integer(1, optional=True)(flag_, value)


def resolve_layer(graph, layer: int | str | None):
    """The layer's Target: the N-th Conv's block output, a named 4-D tensor, or (None) the last Conv
    whose map is more than one pixel (a classifier written as a 1x1 conv after global pooling,
    MobileNetV3's, has a 1x1 map: a CAM there is one flat value)."""
    from cnncli.engine.targets import by_layer, by_tensor, conv_nodes

    if isinstance(layer, str):
        try:
            target = by_tensor(graph, layer)
        except BadArgument as exc:
            raise BadArgument("--layer", str(exc)) from None
    elif layer is None:
        target = _last_spatial(graph, len(conv_nodes(graph)))
    else:
        target = by_layer(graph, layer, "name a 4-D tensor with --layer TENSOR")
    if len(target.shape) != 4 or None in target.shape:
        raise BadArgument("--layer", f"'{target.tensor}' has shape {list(target.shape)}; a CAM needs a 4-D feature map")
    return target


def _last_spatial(graph, count: int):
    from cnncli.engine.targets import by_layer

    last = None
    for n in range(count, 0, -1):
        target = by_layer(graph, n, "name a 4-D tensor with --layer TENSOR")
        last = last or target
        shape = target.shape
        if len(shape) == 4 and None not in shape and shape[2] * shape[3] > 1:
            return target
    return last if last is not None else by_layer(graph, 1, "name a 4-D tensor with --layer TENSOR")


@dataclass
class Chooser:
    """Each image's units from the score tensor's values: the ``units`` given, or its ``top`` best."""

    units: list[int] | None
    top: int

    @property
    def count(self) -> int:
        return len(self.units) if self.units is not None else self.top

    def __call__(self, out: np.ndarray) -> list[list[int]]:
        import numpy as np

        if self.units is not None:
            return [list(self.units) for _ in range(len(out))]
        flat = out.reshape(out.shape[0], -1)
        return [[int(c) for c in np.argsort(-row, kind="stable")[:self.top]] for row in flat]


def resolve_score(m, o):
    """(Score, Chooser, class labels or None) from --output/--class/--top or --tensor/--channel."""
    from cnncli.engine.cam import Score
    from cnncli.engine.targets import by_tensor, parse_channels

    if o.tensor is not None:
        t = by_tensor(m.graph, o.tensor)
        if not 0 <= o.channel < t.shape[1]:
            raise BadArgument("--channel", f"{o.channel} is out of range: '{o.tensor}' has {t.shape[1]} channels "
                                           f"(0–{t.shape[1] - 1})")
        return Score(t.tensor, tuple(t.shape)), Chooser([o.channel], 1), None
    outputs = [v.name for v in m.model.graph.output]
    name = o.output if o.output is not None else outputs[0]
    if name not in outputs:
        raise BadArgument("--output", f"the model has no output '{name}' (outputs: {', '.join(outputs)})")
    shape = tuple(m.graph.shape(name) or ())
    if len(shape) != 2 or shape[1] is None:
        raise BadArgument("--output", f"output '{name}' has shape {list(shape)}, not [N, classes]; "
                                      "score another tensor with --tensor T --channel C")
    n = shape[1]
    if o.classes is not None:
        try:
            units = parse_channels(o.classes, None, n)
        except BadArgument as exc:
            raise BadArgument("--class", str(exc).replace("the target has", f"output '{name}' has")
                              .replace("channels", "classes").replace("channel", "class")) from None
        chooser = Chooser(units, len(units))
    else:
        top = 1 if o.top is None else o.top
        if top > n:
            raise BadArgument("--top", f"{top} is out of range: output '{name}' has {n} classes")
        chooser = Chooser(None, top)
    labels = [s.strip() for s in m.labels.get("cnncli.labels", "").split(",")] if m.labels.get("cnncli.labels") else None
    return Score(name, shape), chooser, labels


@dataclass
class Batch:
    names: list[str]
    x: np.ndarray | None  # float32 [N, C, H, W]
    pixels: list[np.ndarray]  # uint8 [H, W, 3] each
    identities: list[tuple[str, ...]]  # (model, image) identities for the file names
    skipped: list[str] = field(default_factory=list)


@dataclass
class CamImages:
    """The images of a run: one given as `cnn project` takes it, or many as `cnn top` does."""

    model: Any  # RunnableModel
    label: str
    preprocess: dict
    batch: int  # images per forward run
    single: Any = None  # ImageInput
    paths: Any = None  # iterable of paths
    load: Any = None  # path -> (uint8 pixels, float32 [1, C, H, W])
    model_id: str = ""
    identity: str = ""  # the single image's
    bgr: bool = False  # the model takes BGR: pictures flip the channels back
    skipped: list[str] = field(default_factory=list)
    count: int | None = None  # the number of images when known

    def batches(self) -> Iterator[Batch]:
        import numpy as np

        from cnncli.api.sources import image_identity
        from cnncli.imaging.preprocess import ImageReadError, display_pixels

        if self.single is not None:
            img = self.single
            yield Batch([img.name], img.x, [img.pixels], [(self.model_id, self.identity)])
            return
        from cnncli.engine.top import batched

        for chunk in batched(self.paths, self.batch):
            names, xs, pixels, ids, bad = [], [], [], [], []
            for p in chunk:
                try:
                    raw, x = self.load(p)
                except ImageReadError:
                    bad.append(p)
                    continue
                names.append(p)
                xs.append(x)
                pixels.append(display_pixels(raw))
                ids.append((self.model_id, image_identity(p)))
            self.skipped.extend(bad)
            yield Batch(names, np.concatenate(xs) if xs else None, pixels, ids, bad)


def _many(images: Any) -> bool:
    """Whether ``images`` names several images (a folder, glob, list file, '-', or a list)."""
    from pathlib import Path

    from cnncli.bundled import IMAGE_SUFFIXES
    from cnncli.imaging.sources import GLOB_CHARS

    if isinstance(images, (list, tuple)):
        return True
    if not isinstance(images, (str, os.PathLike)):
        return False
    spec = os.fspath(images)
    p = Path(spec)
    if spec == "-" or p.is_dir():
        return True
    if p.is_file():
        return p.suffix.lower() not in (*IMAGE_SUFFIXES, ".npy")
    return bool(GLOB_CHARS & set(spec))


def open_images(model: Any, images: Any, o, stdin=None) -> CamImages:
    from cnncli.api.sources import image_identity, load, model_identity, open_with_image, prepare_image

    if not _many(images):
        m, array = open_with_image(model, images, o.size, o.input_name)
        img = prepare_image(m, images, array, o.preset, o.mean, o.std, o.bgr)
        return CamImages(m, img.name, img.preprocess, 1, single=img, model_id=model_identity(model, m),
                         identity=image_identity(images), count=1, bgr=img.bgr)
    from cnncli.api.top_files import listed_paths
    from cnncli.engine.model_input import image_loader, model_preprocess, open_for_images

    if isinstance(model, str) and model == "-" and isinstance(images, str) and images == "-":
        raise BadArgument("IMAGES", "the model is read from standard input: give the images as a folder, glob or list file")
    m = open_for_images(load(model), o.size, o.input_name)
    prep = model_preprocess(m, o.preset, o.mean, o.std, o.bgr)
    paths, label, _ = listed_paths(images, stdin)
    paths = list(paths)
    if not paths:
        raise CnnError(f"no images in '{label}'")
    batch = min(o.batch_size, len(paths)) if m.batchable else 1
    return CamImages(m, label, {**prep.describe(), "size": [m.shape[2], m.shape[3]]}, batch, paths=paths,
                     load=image_loader(m, prep), model_id=model_identity(model, m), count=len(paths), bgr=prep.bgr)
