"""`cnn project` as a library call: load, choose the target, preprocess, project, write files."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnncli.errors import BadArgument
from cnncli.output import col


DEFAULT_TOP = 4  # channels projected when neither --channel nor --top is given


@dataclass(frozen=True)
class ProjectRequest:
    model: str
    input: str
    layer: int | None = None
    tensor: str | None = None
    channels: str | None = None  # "12", "3,5,12", "all"
    top: int | None = None
    mode: str = "deconvnet"
    keep: str = "map"
    preset: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    bgr: bool | None = None
    size: tuple[int, int] | None = None
    norm: str = "grey"
    out_dir: str = "cnn-out"
    save_npy: bool = False
    export_reverse: str | None = None
    provider: str = "auto"
    input_name: str | None = None
    verbose: bool = False
    max_batch: int = 64


@dataclass(frozen=True)
class ProjectionRow:
    channel: int = col("channel", "int")
    max_activation: float = col("max activation")
    location: list | None = col("location [y,x]", "dims")
    files: dict = col("files", "files")


@dataclass
class ProjectReport:
    meta: dict[str, Any]
    rows: list[ProjectionRow] = field(default_factory=list)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "tensor"


def run_project(req: ProjectRequest) -> ProjectReport:
    from cnncli.atomic import check_writable_dir
    from cnncli.images import input_display, projection_figure, save_figure, save_npy, save_png, to_display
    from cnncli.model_input import open_for_images
    from cnncli.preprocess import display_pixels, make_preprocess, read_image, read_npy, to_tensor
    from cnncli.project import Projector
    from cnncli.runtime import resolve_provider
    from cnncli.targets import by_layer, by_tensor, parse_channels

    if (req.layer is None) == (req.tensor is None):
        raise BadArgument("--layer", "give exactly one of --layer N or --tensor NAME")
    out_dir = Path(req.out_dir)
    check_writable_dir(out_dir)
    if req.export_reverse:
        check_writable_dir(Path(req.export_reverse).parent, "--export-reverse file")
    provider = resolve_provider(req.provider)

    is_npy = req.input.lower().endswith(".npy")
    if is_npy:
        x = read_npy(req.input)
        m = open_for_images(req.model, input_name=req.input_name, array=(req.input, x.shape))
    else:
        m = open_for_images(req.model, req.size, req.input_name)
    model, graph, input_name, shape = m.model, m.graph, m.input_name, m.shape
    loaded_name = m.name
    target = by_layer(graph, req.layer) if req.layer is not None else by_tensor(graph, req.tensor)
    top = req.top
    if req.channels is None and top is None:
        top = min(DEFAULT_TOP, target.shape[1])
    chans = parse_channels(req.channels, top, target.shape[1])

    if is_npy:
        pixels, prep_info = input_display(x), {"preset": "none (.npy used as is)"}
        bgr = False
    else:
        prep = make_preprocess(shape[1], req.preset, req.mean, req.std, req.bgr)
        raw = read_image(req.input, shape[1], (shape[2], shape[3]))
        x = to_tensor(raw, prep)
        pixels, prep_info, bgr = display_pixels(raw), {**prep.describe(), "size": [shape[2], shape[3]]}, prep.bgr

    projector = Projector(model, graph, input_name, target.tensor, req.mode, provider, req.verbose, req.max_batch)
    results = projector.project(x, chans, req.keep, top)

    stem = _slug(Path(loaded_name).stem)
    label = f"layer{target.layer}" if target.layer is not None else _slug(target.tensor)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in results:
        base = out_dir / f"{stem}_{label}_c{r.channel}_{req.mode}"
        img = to_display(r.projection, req.norm, bgr=bgr)
        files = {"png": str(save_png(img, f"{base}.png"))}
        title = f"{Path(loaded_name).name} · {label} · channel {r.channel} · {req.mode}, keep {req.keep}"
        fig_img = img if img.ndim == 3 else np.repeat(img[:, :, None], 3, axis=2)
        files["figure"] = str(save_figure(projection_figure(pixels, fig_img, r.projection, title), f"{base}_figure.png"))
        if req.save_npy:
            files["npy"] = str(save_npy(r.projection[None], f"{base}.npy"))
        rows.append(ProjectionRow(r.channel, r.max_activation, r.location, files))
    if req.export_reverse:
        from cnncli.atomic import write_bytes_atomic

        write_bytes_atomic(req.export_reverse, projector.reverse_model(projector.last_forward).SerializeToString())
    meta = {
        "model": loaded_name,
        "input": req.input,
        "tensor": target.tensor,
        "layer": target.layer,
        "mode": req.mode,
        "keep": req.keep,
        "provider": provider,
        "preprocess": prep_info,
    }
    return ProjectReport(meta, rows)
