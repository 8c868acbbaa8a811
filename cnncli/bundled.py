"""Where the bundled sample model and images are: installed as cnncli.samples, or in a checkout."""

from __future__ import annotations

from pathlib import Path

from cnncli.errors import CnnError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DEMO_MODEL = "zfnet_mini.onnx"


def samples_dir() -> Path:
    candidates = []
    try:
        from importlib.resources import files

        candidates.append(Path(str(files("cnncli.samples"))))
    except (ModuleNotFoundError, TypeError):
        pass
    candidates.append(Path(__file__).resolve().parents[1] / "sample_models")
    for c in candidates:
        if (c / DEMO_MODEL).is_file():
            return c
    raise CnnError("the bundled sample model is missing; reinstall cnncli (pip install .)")


def sample_model() -> Path:
    return samples_dir() / DEMO_MODEL


def sample_images() -> list[Path]:
    folder = samples_dir() / "images"
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
