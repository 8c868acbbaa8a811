"""`cnn demo`: `cnn report` (cnncli.api.report) on the bundled trained network and the bundled
photographs, with each photograph's own strongest maps per layer, as one self-contained
``index.html`` page."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cnncli.api.options import Options, choice, integer, opt, path
from cnncli.api.result import Hear, Result
from cnncli.choices import PROVIDERS
from cnncli.columns import col


@dataclass(frozen=True)
class DemoRow:
    layer: int = col("layer", "int")
    tensor: str = col("tensor")
    receptive_field: list | None = col("RF", "shape")
    images: int = col("images", "int")
    projections: int = col("projections", "int")


@dataclass(frozen=True, kw_only=True)
class DemoOptions(Options):
    out: str = opt("cnn-demo", "--out", path(optional=False))
    top: int = opt(4, "--top", integer(1))
    provider: str = opt("auto", "--provider", choice(PROVIDERS))


@dataclass(eq=False)
class Demo(Result):
    model: str
    gallery: str
    rows: list[DemoRow]
    files: list[str]
    warnings: list[str] = field(default_factory=list)

    def document(self):
        from cnncli.render import Document

        return Document(rows=self.rows, row_type=DemoRow, meta={"model": self.model, "gallery": self.gallery},
                        title=f"cnncli demo: {self.model}", totals={"files": len(self.files), "gallery": self.gallery})


def run(options: DemoOptions, *, progress: Callable[[str], None] | None = None,
        on_warning: Hear | None = None) -> Demo:
    """The demo into ``options.out``: `cnn report` on the bundled network and photographs, with each
    photograph's ``top`` strongest maps per layer; ``progress(text)`` hears what it is doing."""
    from cnncli.api.report import ReportOptions, run as report
    from cnncli.bundled import sample_model, samples_dir

    model, images = sample_model(), str(samples_dir() / "images")
    o = ReportOptions(out=options.out, top=options.top, k=DEMO_K, channels=DEMO_CHANNELS, provider=options.provider)
    r = report(str(model), images, o, progress=progress, on_warning=on_warning, manifest=MANIFEST,
               title=f"cnncli demo: {model.name}", intro=_intro(model))
    rows = [DemoRow(row.layer, row.tensor, row.receptive_field, r.meta["scanned"], row.projections) for row in r.rows]
    return Demo(str(model), r.meta["page"], rows, r.files, r.warnings)


DEMO_K, DEMO_CHANNELS = 4, 6  # per layer: its 6 strongest channels, each with its top 4 photographs


def _intro(model: Path) -> str:
    from cnncli.api.sources import load

    labels = {p.key: p.value for p in load(str(model)).model.metadata_props}
    classes = labels.get("cnncli.labels", "")
    return ("<p class='note'>A small network with the Zeiler &amp; Fergus (2013) layout, trained by "
            "<code>sample_models/train.py</code> on generated images"
            + (f" of {html.escape(classes.replace(',', ', '))}" if classes else "")
            + " (never on these photographs). Below: what each layer costs (<code>cnn stats</code>, "
            "<code>cnn connectivity</code>); per conv layer its filters, its strongest channels over the photographs "
            "with their receptive-field patches (<code>cnn top</code>) and each channel's whole map projected back to "
            "pixels with the deconvnet; then, for each photograph, the strongest feature maps of every conv layer "
            "projected back (<code>cnn project --mode deconvnet --top 4 --norm percentile</code>). Grey is zero; light "
            "and dark are the signed pixel pattern that drives the feature map. Early layers respond to edges and "
            "colour blobs, deeper layers to larger parts of the picture. The same page for any model: "
            "<code>cnn report MODEL IMAGES</code>.</p>")


MANIFEST = ".cnn-demo-files.json"  # what the last run wrote, relative to the folder


def read_manifest(out: Path) -> list[str]:
    """The files a previous demo run wrote into ``out`` (cnncli.api.report_files.read_manifest)."""
    from cnncli.api.report_files import read_manifest as read

    return read(out, MANIFEST)


def replace_manifest(out: Path, previous: list[str], files: list[str]) -> None:
    """Record this run's files, remove the previous run's others (cnncli.api.report_files)."""
    from cnncli.api.report_files import replace_manifest as replace

    replace(out, previous, files, MANIFEST)
