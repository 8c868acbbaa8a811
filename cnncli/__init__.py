"""cnncli: per-layer cost accounting and deconvnet projections for ONNX CNNs.

From Python (nothing is written unless asked)::

    import cnncli
    s = cnncli.stats("model.onnx")                                   # s.layers, s.totals, s.to_dict()
    res = cnncli.project("model.onnx", "photo.jpg", layer=5, top=4)  # float32 arrays, res[0].to_image()
    found = cnncli.top("model.onnx", "photos/", layer=3, channels=[1, 2], k=9)

Names are imported on first use, so ``import cnncli`` (and ``cnn --help``) stays light.

``cnncli.stats``, ``cnncli.project`` and ``cnncli.top`` are the API functions, although modules of
those names exist too (the engine's): reach the modules with ``from cnncli.project import Projector``
or ``importlib.import_module("cnncli.project")``, never ``import cnncli.project as m``.
"""

import sys as _sys
import types as _types

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "stats": "cnncli.api.stats",
    "Stats": "cnncli.api.stats",
    "project": "cnncli.api.project",
    "Projection": "cnncli.api.project",
    "Projections": "cnncli.api.project",
    "top": "cnncli.api.top",
    "TopChannel": "cnncli.api.top",
    "TopResult": "cnncli.api.top",
    "CnnError": "cnncli.errors",
    "BadArgument": "cnncli.errors",
}

__all__ = ["__version__", *_LAZY]


_FUNCTIONS = {"stats", "project", "top"}  # API functions that share their name with a submodule


class _Package(_types.ModuleType):
    """The import system binds each loaded submodule onto its package (``setattr``); this keeps
    the API functions ``stats``, ``project`` and ``top`` bound when their namesake modules load."""

    def __setattr__(self, name, value):
        if name in _FUNCTIONS and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cnncli' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


_sys.modules[__name__].__class__ = _Package
