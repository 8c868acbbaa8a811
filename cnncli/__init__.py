"""cnncli: per-layer cost accounting and deconvnet projections for ONNX CNNs.

From Python (nothing is written unless asked)::

    import cnncli
    s = cnncli.stats("model.onnx")                                   # s.layers, s.totals, s.to_dict()
    res = cnncli.project("model.onnx", "photo.jpg", layer=5, top=4)  # float32 arrays, res[0].to_image()
    found = cnncli.top("model.onnx", "photos/", layer=3, channels=[1, 2], k=9)
    maps = cnncli.features("model.onnx", "photo.jpg", layer=2)            # also filters, connectivity

Names are imported on first use, so ``import cnncli`` (and ``cnn --help``) stays light.
"""

__version__ = "0.1.0"

# public name -> module that defines it: each command's function, its options and its result
_LAZY = {
    **dict.fromkeys(("stats", "Stats", "StatsOptions"), "cnncli.api.stats"),
    **dict.fromkeys(("connectivity", "Connectivity", "ConnectivityOptions"), "cnncli.api.connectivity"),
    **dict.fromkeys(("project", "Projection", "Projections", "ProjectOptions"), "cnncli.api.project"),
    **dict.fromkeys(("top", "TopChannel", "TopResult", "TopOptions"), "cnncli.api.top"),
    **dict.fromkeys(("features", "Features", "FeaturesOptions"), "cnncli.api.features"),
    **dict.fromkeys(("filters", "Filters", "FiltersOptions"), "cnncli.api.filters"),
    **dict.fromkeys(("profile", "Profile", "ProfileOptions"), "cnncli.api.profile"),
    **dict.fromkeys(("diff", "Diff", "DiffOptions"), "cnncli.api.diff"),
    **dict.fromkeys(("cam", "CamMap", "CamResult", "CamOptions"), "cnncli.api.cam"),
    **dict.fromkeys(("dream", "Dream", "DreamOptions"), "cnncli.api.dream"),
    **dict.fromkeys(("report", "Report", "ReportOptions"), "cnncli.api.report"),
    **dict.fromkeys(("CnnError", "BadArgument", "CnnWarning"), "cnncli.errors"),
}

__all__ = ["__version__", *_LAZY]


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

