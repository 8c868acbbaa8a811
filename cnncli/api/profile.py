"""`cnn profile` / ``cnncli.profile(model)``: the `cnn stats` rows with the time onnxruntime
measured for each layer, fused kernels joined back to the nodes they cover, and where each layer
sits against this machine's peaks (the roofline).

>>> import cnncli
>>> p = cnncli.profile("sample_models/zfnet_mini.onnx", runs=3)  # doctest: +SKIP
>>> p.totals["ms_run"], p.layers[0].ms  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable

from cnncli.api.options import ShapeOptions, choice, flag, integer, opt, path, text
from cnncli.api.result import Hear, Result, Warnings
from cnncli.choices import GROUPINGS, OPT_LEVELS, PROVIDERS
from cnncli.errors import BadArgument, CnnError

Progress = Callable[[int, int], None]  # (runs done, runs in all)


def row_type(by: str = "layer") -> type:
    """The rows `cnn profile --by` renders: ProfileRow (one per layer) or ProfileOpRow (per op type)."""
    from cnncli.engine.profile import ProfileOpRow, ProfileRow

    return ProfileOpRow if by == "op" else ProfileRow


def providers_list(flag_: str, value: Any) -> tuple[str, ...] | None:
    """'cpu,cuda' or ('cpu', 'cuda') -> ('cpu', 'cuda'): named providers, each once."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if isinstance(items, (bytes, dict, set)) or not all(isinstance(p, str) for p in items):
        raise BadArgument(flag_, f"{value!r} is not a list of providers like cpu,cuda")
    out = tuple(dict.fromkeys(p.strip().lower() for p in items if p.strip()))
    named = tuple(p for p in PROVIDERS if p != "auto")
    bad = [p for p in out if p not in named]
    if bad or not out:
        raise BadArgument(flag_, f"'{','.join(bad) if bad else value}' names no provider (providers: {', '.join(named)})")
    return out


@dataclass(frozen=True, kw_only=True)
class ProfileOptions(ShapeOptions):
    provider: str = opt("auto", "--provider", choice(PROVIDERS))
    input: str | None = opt(None, "--input", path())
    warmup: int = opt(2, "--warmup", integer(0, maximum=10_000))
    runs: int = opt(10, "--runs", integer(1, maximum=100_000))
    opt_level: str = opt("all", "--opt-level", choice(OPT_LEVELS))
    compare_providers: tuple | None = opt(None, "--compare-providers", providers_list)
    by: str = opt("layer", "--by", choice(GROUPINGS))
    sort: str | None = opt(None, "--sort", text())
    top: int | None = opt(None, "--top", integer(1, optional=True))
    plot: str | None = opt(None, "--plot", path())
    remeasure_peaks: bool = opt(False, "--remeasure-peaks", flag)
    verbose: bool = opt(False, "--verbose", flag)

    def validate(self) -> None:
        if self.sort is not None:
            from cnncli.costs.stats import sort_rows

            sort_rows([], row_type(self.by), self.sort)  # the column must exist
        if self.plot is not None and not self.plot.lower().endswith(".png"):
            raise BadArgument("--plot", f"'{self.plot}' should end in .png")
        if self.input is not None and not self.input.lower().endswith((".npy", ".npz")):
            raise BadArgument("--input", f"'{self.input}' should be a .npy array (the model's one input) "
                                         "or a .npz of arrays named as the inputs")


@dataclass(eq=False)
class Profile(Result):
    """A profiled model: ``layers`` (one ProfileRow per layer and provider: the `cnn stats` columns,
    then ``ms``, ``ms_share``, ``gmacs_per_s``, ``bytes``, ``intensity``, ``bound``, ``fused_into``,
    ``kernels``), ``rows`` (what the command shows: per layer or per op, sorted and cut),
    ``totals`` (stats' macs and params, the whole run's median ``ms_run`` and its spread, the sum
    of the layers ``ms_layers``, the peaks), ``peaks`` (per provider), ``warnings``, ``files``."""

    model: str
    inputs: list[dict[str, Any]]
    layers: list
    totals: dict[str, Any]
    peaks: dict[str, dict[str, float]]
    rows: list | None = None
    by: str = "layer"
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def document(self):
        from cnncli.api.sources import inputs_text
        from cnncli.render import Document

        peaks = "; ".join(f"{p}: peaks {v['gmacs_per_s']:,.1f} GMAC/s, {v['gbytes_per_s']:,.1f} GB/s"
                          for p, v in self.peaks.items())
        rows = self.layers if self.rows is None else self.rows
        return Document(rows=rows, row_type=row_type(self.by), rows_key="ops" if self.by == "op" else "layers",
                        meta={"model": self.model, "inputs": self.inputs, "peaks": self.peaks}, totals=self.totals,
                        title=f"{self.model}  ({inputs_text(self.inputs)})  {peaks}")


def read_inputs(file: str | None, names: list[str]) -> dict[str, Any]:
    """The arrays of ``--input``: a .npy for the model's one input, a .npz by input name."""
    import numpy as np

    if file is None:
        return {}
    try:
        data = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise CnnError(f"cannot read '{file}': {getattr(exc, 'strerror', None) or exc}") from None
    if isinstance(data, np.ndarray):
        if len(names) != 1:
            raise BadArgument("--input", f"the model has {len(names)} inputs ({', '.join(names)}): give a .npz "
                                         "of arrays named as them")
        return {names[0]: data}
    with data:  # an .npz: its file closed once read
        try:
            arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError) as exc:
            raise CnnError(f"cannot read '{file}': {exc}") from None
    unknown = [k for k in arrays if k not in names]
    if unknown:
        raise BadArgument("--input", f"the model has no input '{unknown[0]}' (inputs: {', '.join(names)})")
    return arrays


def _check_given(model, given: dict[str, Any], file: str | None) -> None:
    """An --input array must fit the dims its input declares (a symbolic dim takes any size)."""
    from cnncli.engine.model_input import declared_shape

    for name, array in given.items():
        declared = declared_shape(model, name)
        if len(declared) != array.ndim or any(d is not None and d != a for d, a in zip(declared, array.shape)):
            shown = "x".join("N" if d is None else str(d) for d in declared)
            raise BadArgument("--input", f"'{name}' is {'x'.join(map(str, array.shape))} in '{file}', but the model "
                                         f"declares {shown or 'a scalar'}")


def _feeds(graph, given: dict[str, Any]) -> dict[str, Any]:
    """Every input's data: the array given, else random normal floats (zeros for integers and bools)."""
    import numpy as np

    rng = np.random.default_rng(0)
    out = {}
    for spec in graph.inputs:
        if spec.name in given:
            out[spec.name] = np.ascontiguousarray(given[spec.name])
            continue
        dtype = np.dtype(spec.dtype) if spec.dtype not in ("bfloat16", "undefined") else np.dtype("float32")
        shape = tuple(spec.shape)
        out[spec.name] = (rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype))
    return out


def _providers(options: ProfileOptions, warnings: Warnings) -> list[str]:
    """The providers to profile on: --compare-providers less those this onnxruntime lacks (each
    skipped with a warning; none left is an error), else --provider."""
    from cnncli.runtime.sessions import PROVIDER_NAMES, available_providers, resolve_provider

    if options.compare_providers is None:
        return [resolve_provider(options.provider)]
    have = available_providers()
    keep = [p for p in options.compare_providers if PROVIDER_NAMES[p] in have]
    for p in options.compare_providers:
        if p not in keep:
            warnings.add(f"--compare-providers: provider '{p}' is not available in this onnxruntime "
                         f"(available: {', '.join(have)}); skipped (for cuda: install onnxruntime-gpu on a machine with CUDA)")
    if not keep:
        raise CnnError("--compare-providers: none of the providers named is available in this onnxruntime")
    return keep


def _unique_names(nodes) -> list[str]:
    """The node names the session is given: each original name where it is unique, else one made up."""
    seen: dict[str, int] = {}
    for n in nodes:
        seen[n.name] = seen.get(n.name, 0) + 1
    return [n.name if n.name and seen[n.name] == 1 else f"cnncli_node_{i}" for i, n in enumerate(nodes)]


def _session_model(loaded, names: list[str]) -> bytes | str:
    """What the session is given: the model file itself where onnxruntime may read it as it is (a
    file with no external data, no sparse initializer and node names that need no change: a
    100 MB model is not serialised again), else the model serialised with ``names`` on its nodes
    (the model itself is left as it was)."""
    model = loaded.model
    nodes = model.graph.node
    before = [n.name for n in nodes]
    if before == names:
        if (loaded.base_dir is not None and not loaded.has_external and not model.graph.sparse_initializer
                and os.path.isfile(loaded.source)):
            return loaded.source
        return model.SerializeToString()
    try:
        for n, name in zip(nodes, names):
            n.name = name
        return model.SerializeToString()
    finally:
        for n, name in zip(nodes, before):
            n.name = name


def run(model: Any, options: ProfileOptions, *, on_warning: Hear | None = None,
        progress: Progress | None = None) -> Profile:
    """Profile ``model`` (a path, '-', bytes or an onnx.ModelProto) with ``options``."""
    from pathlib import Path

    from cnncli.api.sources import analysed, inputs_of, load
    from cnncli.atomic import check_not_an_input, check_writable_dir
    from cnncli.costs.stats import compute_stats, sorted_top
    from cnncli.engine import profile as engine
    from cnncli.engine.peaks import machine_peaks
    from cnncli.engine.profile_join import join_kernels
    from cnncli.frontend.damage import damage_explained
    from cnncli.frontend.graph import real_inputs
    from cnncli.frontend.load import load_external_weights
    from cnncli.runtime.profiling import profile_runs

    warnings = Warnings(on_warning)
    with damage_explained(), warnings.capturing():
        if options.plot:
            check_writable_dir(Path(options.plot).parent or Path("."), "plot")
            check_not_an_input(options.plot, (model, options.input), "--plot")
        loaded = load(model)
        if loaded.missing_external:  # it runs the model: one error, not "analysing from shapes alone" first
            load_external_weights(loaded)
        given = read_inputs(options.input, [i.name for i in real_inputs(loaded.model.graph)])
        shapes = dict(options.input_shapes)
        _check_given(loaded.model, given, options.input)
        for name, array in given.items():
            if name in shapes and tuple(shapes[name]) != tuple(array.shape):
                raise BadArgument("--input", f"'{name}' is {'x'.join(map(str, array.shape))} in '{options.input}' "
                                             f"but --input-shape sets {'x'.join(map(str, shapes[name]))}")
            shapes[name] = tuple(array.shape)
        loaded, graph = analysed(loaded, SimpleNamespace(batch=options.batch, input_shapes=shapes), warnings)
        stats = compute_stats(graph)
        warnings.add(stats.warning())
        providers = _providers(options, warnings)
        load_external_weights(loaded)
        names = _unique_names(graph.nodes)
        data = _session_model(loaded, names)
        feeds = _feeds(graph, given)
        constants = set(graph.consts)
        layers, per_provider, peaks = [], {}, {}
        for provider in providers:
            peak = machine_peaks(provider, options.remeasure_peaks)
            trace = profile_runs(data, feeds, provider, options.opt_level, options.warmup, options.runs,
                                 options.verbose, progress)
            join = join_kernels(graph.nodes, names, constants, trace.optimized, list(trace.kernels))
            rows, per_provider[provider] = engine.measured_rows(graph, stats.layers, trace, join, peak)
            layers.extend(rows)
            peaks[provider] = {"gmacs_per_s": round(peak.gmacs_per_s, 3), "gbytes_per_s": round(peak.gbytes_per_s, 3)}
            fastest = max(rows, key=lambda r: r.gmacs_per_s or 0, default=None)
            if fastest is not None and (fastest.gmacs_per_s or 0) > 1.1 * peak.gmacs_per_s:
                warnings.add(f"'{fastest.name}' ran at {fastest.gmacs_per_s:,.1f} GMAC/s on {provider}, above the "
                             f"{'cached ' if peak.cached else ''}matmul peak of {peak.gmacs_per_s:,.1f} GMAC/s (measured "
                             "while the machine was busy?): --remeasure-peaks measures it again")
            if join.unjoined:
                warnings.add(f"{len(join.unjoined)} kernel(s) on {provider} could not be joined to a node of the "
                             f"model (first: '{join.unjoined[0]}'); their time is totals.ms_unjoined")
        totals = {"macs": stats.totals["macs"], "params": stats.totals["params"], "opt_level": options.opt_level,
                  "warmup": options.warmup}
        if options.compare_providers is None:
            totals.update(per_provider[providers[0]])
        else:
            totals["providers"] = per_provider
        rows = (engine.by_op(layers, {p: v["gmacs_per_s"] / v["gbytes_per_s"] for p, v in peaks.items()})
                if options.by == "op" else layers)
        rows = sorted_top(rows, row_type(options.by), options.sort, options.top)
        files = []
        if options.plot:
            from cnncli.render.plot import save_png
            from cnncli.render.roofline import roofline_figure

            save_png(roofline_figure(layers, peaks, title=Path(loaded.name).name), options.plot)
            files.append(options.plot)
    return Profile(loaded.name, inputs_of(graph), layers, totals, peaks, rows, options.by, list(warnings), files)


def profile(model: Any, **options: Any) -> Profile:
    """Per-layer measured time of ``model`` beside its `cnn stats` costs; the options of
    ``cnn profile``: ``provider``, ``batch``, ``input_shapes``, ``input`` (.npy/.npz), ``warmup``,
    ``runs``, ``opt_level`` (disable, basic, extended, all), ``compare_providers``
    (``"cpu,cuda"``), ``by``, ``sort``, ``top``, ``plot`` (a PNG file to write), ``verbose``."""
    return run(model, ProfileOptions.from_kwargs(options))

