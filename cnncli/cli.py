"""The `cnn` command line: parse, call the library, render. Exit codes are mapped here only.

0 ok; 2 bad usage (click usage errors and ``BadArgument``); 1 anything else the user can fix
(``CnnError``). Heavy libraries are imported inside the commands so `cnn --help` stays fast.
"""

from __future__ import annotations

import os
import sys

import click

from cnncli import __version__
from cnncli.errors import BadArgument, CnnError
from cnncli.render import FORMATS


def _one_line(message: str) -> str:
    """An error message on one line (an onnx or OS message may span several)."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


class CnnGroup(click.Group):
    def invoke(self, ctx: click.Context):
        from cnncli.frontend.damage import damage_explained
        from cnncli.render.routed_warnings import routed_warnings

        try:
            # warnings of numpy, Pillow and cnncli one line each; a crash on a damaged model file
            # becomes the one-line error that names the damage
            with routed_warnings(), damage_explained():
                return super().invoke(ctx)
        except KeyboardInterrupt:  # Ctrl-C: one line, exit 130 (128 + SIGINT); atomic writes left nothing half-written
            _interrupted()
        except MemoryError:
            raise click.ClickException("not enough memory for this run") from None
        except BadArgument as exc:
            raise click.BadParameter(_one_line(exc), param_hint=f"'{exc.param}'") from None
        except CnnError as exc:
            raise click.ClickException(_one_line(exc)) from None
        except click.UsageError as exc:
            exc.ctx = None  # one line: "Error: ..." without the usage block
            raise
        except BrokenPipeError:  # the reader of stdout left (cnn … | head): a normal end, exit 0
            raise click.exceptions.Exit(0) from None


def _interrupted() -> None:
    try:
        sys.stderr.write("Interrupted.\n")
    except (OSError, ValueError):
        pass
    raise click.exceptions.Exit(130)


# The row type each command renders, so --columns is checked before any work (a command not
# listed here has its --columns checked when it renders).
_ROW_TYPES = {
    "stats": lambda kw: ("cnncli.costs.stats", "OpRow" if kw.get("by") == "op" else "LayerRow"),
    "connectivity": lambda kw: ("cnncli.costs.connectivity", "ConnectivityRow"),
    "project": lambda kw: ("cnncli.commands.project", "ProjectionRow"),
    "demo": lambda kw: ("cnncli.commands.demo", "DemoRow"),
    "top": lambda kw: ("cnncli.engine.top", "ChannelTopRow"),
    "features": lambda kw: ("cnncli.commands.features", "FeatureRow"),
    "filters": lambda kw: ("cnncli.commands.filters", "FilterRow"),
}


def format_option(f):
    """--format, --columns and --wide. The command gets them as one ``fmt`` argument: the format
    name (a str) carrying the picked columns, which ``render`` reads."""
    import functools

    @functools.wraps(f)
    def command(*args, fmt, columns, wide, **kwargs):
        from cnncli.render import OutputFormat

        picked = None
        if columns is not None:
            if wide:
                raise click.UsageError("give --columns or --wide, not both")
            picked = tuple(c.strip() for c in columns.split(",") if c.strip())
            if f.__name__ in _ROW_TYPES:
                import importlib

                from cnncli.render import pick_columns

                module, name = _ROW_TYPES[f.__name__](kwargs)
                pick_columns(getattr(importlib.import_module(module), name), picked)
        return f(*args, fmt=OutputFormat(fmt, picked, wide), **kwargs)

    options = [
        click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
                     help="Output format for stdout."),
        click.option("--columns", metavar="COL,COL…",
                     help="Only these columns, in this order (table, markdown, csv; names as in JSON, or headers)."),
        click.option("--wide", is_flag=True,
                     help="Every column in a terminal's table [default: those that fit; a pipe gets every column]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def shape_options(f):
    f = click.option(
        "--input-shape", "input_shapes", multiple=True, metavar="NAME=1x3x224x224",
        help="Set an input's shape (repeatable).",
    )(f)
    f = click.option("--batch", type=int, default=1, show_default=True, help="Value for a symbolic leading (batch) dim.")(f)
    return f


def image_options(f):
    """Preprocessing, input choice and runtime options shared by project, top and features."""
    options = [
        click.option("--preset", type=click.Choice(["imagenet", "caffe", "unit", "raw"]),
                     help="Image preprocessing [default: the model's own if it names one, else imagenet for 3 channels, unit otherwise]."),
        click.option("--mean", metavar="M[,M,M]", help="Override the preset's mean."),
        click.option("--std", metavar="S[,S,S]", help="Override the preset's std."),
        click.option("--bgr/--rgb", default=None, help="Override the preset's channel order."),
        click.option("--size", metavar="HxW", help="Input size where the model's height/width are symbolic."),
        click.option("--input-name", help="Which model input, for models with several."),
        click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                     help="onnxruntime execution provider."),
        click.option("--verbose", is_flag=True, help="Let onnxruntime's log lines through to stderr."),
        click.option("--max-memory", metavar="SIZE", callback=_max_memory,
                     help="Refuse a run whose estimated memory exceeds SIZE (e.g. 64G) [default: the memory available]."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _max_memory(ctx, param, value):
    from cnncli.engine.memory import parse_size

    return None if value is None else parse_size(value)  # a BadArgument: CnnGroup's usage error


def parse_image_options(mean, std, size):
    from cnncli.imaging.preprocess import parse_floats

    size_hw = None
    if size is not None:
        dims = _parse_dims("--size", size)
        if len(dims) != 2:
            raise BadArgument("--size", f"'{size}' should be HxW")
        size_hw = dims
    return parse_floats("--mean", mean), parse_floats("--std", std), size_hw


def parse_input_shapes(items: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    from cnncli.frontend.graph import parse_shape_text

    out = {}
    for item in items:
        name, sep, text = item.rpartition("=")
        if not sep or not name:
            raise BadArgument("--input-shape", f"'{item}' is not NAME=SHAPE, e.g. input=1x3x224x224")
        out[name] = parse_shape_text(text)
    return out


def load_graph(model: str, batch: int, input_shapes: tuple[str, ...]):
    """Load MODEL (path or '-') and analyse its shapes; warn about absent external data."""
    from cnncli.render.console import warn
    from cnncli.frontend.graph import analyse
    from cnncli.frontend.load import load_model

    shapes = parse_input_shapes(input_shapes)
    if batch < 1:
        raise BadArgument("--batch", f"must be at least 1, not {batch}")
    loaded = load_model(model)
    if loaded.missing_external:
        warn(
            f"external data file '{loaded.missing_external[0]}' is missing; "
            "analysing from shapes alone (weights are not needed for costs)"
        )
    graph = analyse(loaded.model, batch=batch, input_shapes=shapes)
    for message in graph.warnings:
        warn(message)
    return loaded, graph


@click.group(cls=CnnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="cnn")
def cli() -> None:
    """What each layer of an ONNX CNN costs, and what each feature map has learned."""


@cli.command(short_help="Per-layer MACs, params, CPR, memory and receptive field.")
@click.argument("model")
@shape_options
@format_option
@click.option("--by", type=click.Choice(["layer", "op"]), default="layer", show_default=True, help="One row per layer, or per op type.")
@click.option("--sort", "sort_by", metavar="COLUMN", help="Sort rows by a column (numbers largest first).")
@click.option("--top", type=click.IntRange(min=1), metavar="N", help="Keep only the first N rows (after --sort).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), metavar="FILE.png", help="Save a per-layer cost plot.")
def stats(model, batch, input_shapes, fmt, by, sort_by, top, plot_path):
    """Per-layer MACs, params, CPR, activation memory and receptive field of MODEL (a path, or - for stdin)."""
    from pathlib import Path

    from cnncli.api.stats import inputs_of, inputs_text
    from cnncli.atomic import check_writable_dir
    from cnncli.render.console import warn
    from cnncli.render import Document, render
    from cnncli.costs.stats import LayerRow, OpRow, by_op, compute_stats, sort_rows

    row_type = OpRow if by == "op" else LayerRow
    if sort_by is not None:
        sort_rows([], row_type, sort_by)  # validates the column name before any work
    if plot_path:
        if not plot_path.lower().endswith(".png"):
            raise BadArgument("--plot", f"'{plot_path}' should end in .png")
        check_writable_dir(Path(plot_path).parent or Path("."), "plot")
    loaded, graph = load_graph(model, batch, input_shapes)
    result = compute_stats(graph)
    if result.unknown_ops:
        warn(result.warning())
    rows = by_op(result.layers) if by == "op" else result.layers
    if sort_by:
        rows = sort_rows(rows, row_type, sort_by)
    if top:
        rows = rows[:top]
    if plot_path:
        from cnncli.render.plot import save_png, stats_figure

        save_png(stats_figure(result.layers, title=Path(loaded.name).name), plot_path)
    meta = {"model": loaded.name, "inputs": inputs_of(graph)}
    title = f"{loaded.name}  ({inputs_text(meta['inputs'])})"
    render(
        Document(rows=rows, row_type=row_type, rows_key="ops" if by == "op" else "layers", meta=meta, totals=result.totals, title=title),
        fmt,
        sys.stdout,
    )


def _parse_dims(param: str, text: str) -> tuple[int, ...]:
    from cnncli.frontend.graph import parse_shape_text

    try:
        return parse_shape_text(text)
    except BadArgument as exc:
        raise BadArgument(param, str(exc)) from None


@cli.command(short_help="Weights fully connected vs locally connected vs shared.")
@click.argument("model", required=False)
@shape_options
@format_option
@click.option("--input", "input_hw", metavar="HxW", help="Calculator: image size (or CxHxW).")
@click.option("--units", type=click.IntRange(min=1), help="Calculator: number of hidden units.")
@click.option("--kernel", metavar="KxK", help="Calculator: window size of a locally connected unit.")
def connectivity(model, batch, input_shapes, fmt, input_hw, units, kernel):
    """Weights of each conv layer fully connected vs locally connected vs shared.

    Give MODEL, or the calculator form: --input 100x100 --units 100000 --kernel 3x3.
    """
    from cnncli.costs.connectivity import ConnectivityRow, calculator, model_connectivity
    from cnncli.render import Document, render

    calc = [input_hw, units, kernel]
    if model is not None and any(v is not None for v in calc):
        raise click.UsageError("give either MODEL or --input/--units/--kernel, not both")
    if model is None:
        if any(v is None for v in calc):
            raise click.UsageError("give MODEL, or all of --input, --units and --kernel")
        dims = _parse_dims("--input", input_hw)
        if len(dims) not in (2, 3):
            raise BadArgument("--input", f"'{input_hw}' should be HxW or CxHxW")
        k = _parse_dims("--kernel", kernel)
        channels, hw = (dims[0], dims[1:]) if len(dims) == 3 else (1, dims)
        rows = [calculator(hw, units, k, channels)]
        meta = {"model": None, "inputs": [{"name": "image", "shape": list(dims)}]}
        title = f"{input_hw} image into {units:,} units, {kernel} windows"
    else:
        loaded, graph = load_graph(model, batch, input_shapes)
        rows = model_connectivity(graph)
        meta = {"model": loaded.name, "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in graph.inputs]}
        title = f"{loaded.name}: weights per conv layer (per sample)"
    render(Document(rows=rows, row_type=ConnectivityRow, meta=meta, title=title), fmt, sys.stdout)


@cli.command(short_help="Project feature maps back to pixels (deconvnet).")
@click.argument("model")
@click.argument("input_path", metavar="INPUT")
@click.option("--layer", type=int, help="The N-th Conv, numbered as `cnn stats` numbers them (its block output).")
@click.option("--tensor", help="Any 4-D tensor of the graph, or a 2-D one such as the logits.")
@click.option("--channel", "channels", metavar="N[,N…]|all", help="Channels to project.")
@click.option("--top", type=int, metavar="K", help="The K channels with the largest activation on this input [default: 4, or all if fewer].")
@click.option("--mode", type=click.Choice(["deconvnet", "backprop", "guided"]), default="deconvnet", show_default=True)
@click.option("--keep", type=click.Choice(["map", "max"]), default="map", show_default=True,
              help="Seed the channel's whole map, or only its strongest activation.")
@click.option("--norm", type=click.Choice(["grey", "minmax", "percentile"]), default="grey", show_default=True,
              help="How projections become pixels (grey: 0 at mid-grey, symmetric scale).")
@click.option("--out", "out_dir", default="cnn-out", show_default=True, help="Output folder.")
@click.option("--save-npy", is_flag=True, help="Also save the raw float32 projection, shaped like the model input.")
@click.option("--export-reverse", type=click.Path(dir_okay=False), metavar="FILE.onnx", help="Write the generated reverse graph.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Channels per batched reverse run.")
@click.option("--figure/--no-figure", default=True, show_default=True,
              help="Write the input | projection | overlay figure beside each projection PNG.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@image_options
@format_option
def project(model, input_path, layer, tensor, channels, top, mode, keep, norm, out_dir, save_npy, export_reverse,
            batch_size, figure, quiet, preset, mean, std, bgr, size, input_name, provider, verbose, max_memory, fmt):
    """Project feature maps of MODEL on INPUT (an image or a .npy) back to pixels (Zeiler & Fergus deconvnet)."""
    from cnncli.render import Document, render
    from cnncli.commands.project import ProjectionRow, ProjectRequest, run_project

    mean, std, size_hw = parse_image_options(mean, std, size)
    with _progress(quiet, "projecting channels", min_total=8) as tick:
        report = run_project(ProjectRequest(
            model=model, input=input_path, layer=layer, tensor=tensor, channels=channels, top=top, mode=mode,
            keep=keep, preset=preset, mean=mean, std=std, bgr=bgr, size=size_hw, norm=norm, out_dir=out_dir, save_npy=save_npy, figure=figure, export_reverse=export_reverse,
            provider=provider, input_name=input_name, verbose=verbose, max_batch=batch_size, max_memory=max_memory,
        ), progress=tick)
    m = report.meta
    title = f"{m['model']} · {m['tensor']} · {m['mode']} (keep {m['keep']}) on {m['provider']}"
    render(Document(rows=report.rows, row_type=ProjectionRow, rows_key="results", meta=m, title=title), fmt, sys.stdout)


@cli.command(short_help="The whole tool on the bundled trained network and photos.")
@click.option("--out", "out_dir", default="cnn-demo", show_default=True, help="Folder for the gallery.")
@click.option("--top", type=click.IntRange(min=1), default=4, show_default=True, help="Channels per layer and image.")
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress messages on stderr.")
@format_option
def demo(out_dir, top, provider, quiet, fmt):
    """Stats, connectivity and projections of the bundled trained network on the bundled photos, as a gallery."""
    from cnncli.render.console import info
    from cnncli.commands.demo import DemoRow, run_demo
    from cnncli.render import Document, render

    report = run_demo(out_dir, top=top, provider=provider, progress=None if quiet else info)
    meta = {"model": report.model, "gallery": report.gallery}
    render(Document(rows=report.rows, row_type=DemoRow, meta=meta, title=f"cnncli demo: {report.model}",
                    totals={"files": len(report.files), "gallery": report.gallery}), fmt, sys.stdout)


@cli.command(short_help="Top-k activations over your images, with RF patches.")
@click.argument("model")
@click.argument("images")
@click.option("--layer", type=int, required=True, help="The N-th Conv, numbered as `cnn stats` numbers them.")
@click.option("--channel", "channels", metavar="N[,N…]", help="Channels to show.")
@click.option("--channels", "n_channels", metavar="K|all", help="K channels chosen at random (--seed), or all [default: 16].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the random choice of channels.")
@click.option("-k", "k", type=click.IntRange(min=1), default=9, show_default=True, help="Top activations per channel.")
@click.option("--mode", type=click.Choice(["deconvnet", "backprop", "guided"]), default="deconvnet", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Images per forward run.")
@click.option("--out", "out_dir", default="cnn-top", show_default=True, help="Output folder.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Scan in this process, or on Ray Data (pip install 'cnncli[ray]').")
@click.option("--address", metavar="ADDRESS", help="Ray: join this cluster ('auto', 'ray://host:10001') [default: start a local runtime].")
@click.option("--workers", type=click.IntRange(min=1), metavar="N", help="Ray: model actors, one session each [default: from the cluster].")
@image_options
@format_option
def top(model, images, layer, channels, n_channels, seed, k, mode, batch_size, out_dir, quiet, engine, address, workers,
        preset, mean, std, bgr, size, input_name, provider, verbose, max_memory, fmt):
    """The top-k activations of a layer's feature maps over IMAGES (a folder, a glob, a text file of
    paths, or - for paths on stdin), each projected alone beside its receptive-field patch."""
    from cnncli.render.console import warn
    from cnncli.render import Document, render
    from cnncli.engine.top import ChannelTopRow
    from cnncli.commands.top import TopRequest, run_top

    if engine == "local" and (address is not None or workers is not None):
        raise BadArgument("--engine", "--address and --workers need --engine ray")
    mean, std, size_hw = parse_image_options(mean, std, size)
    req = TopRequest(model=model, images=images, layer=layer, channels=channels, n_channels=n_channels, seed=seed,
                     k=k, mode=mode, batch_size=batch_size, preset=preset, mean=mean, std=std, bgr=bgr, size=size_hw,
                     out_dir=out_dir, provider=provider, input_name=input_name, verbose=verbose,
                     engine=engine, address=address, workers=workers, max_memory=max_memory)
    with _progress(quiet, "scanning images") as tick:
        report = run_top(req, stdin=sys.stdin if images == "-" else None, progress=tick)
    if report.skipped:
        names = ", ".join(report.skipped[:3]) + (", …" if len(report.skipped) > 3 else "")
        warn(f"skipped {len(report.skipped)} unreadable image(s): {names}")
    m = report.meta
    title = f"{m['model']} · layer {m['layer']} ({m['tensor']}) · top {m['k']} of {m['scanned']} images"
    render(Document(rows=report.rows, row_type=ChannelTopRow, rows_key="channels", meta=m, title=title), fmt, sys.stdout)


class _progress:
    """A transient progress bar on stderr (nothing when quiet or not a terminal); yields a
    tick(n, total=None) function. With ``min_total`` the bar starts only when a tick announces a
    total above it, so a run of a handful of items stays silent."""

    def __init__(self, quiet: bool, label: str, min_total: int | None = None):
        self.quiet, self.label, self.min_total, self.bar, self.task = quiet, label, min_total, None, None

    def __enter__(self):
        from cnncli.render.console import err_console

        if self.quiet or not err_console().is_terminal:  # rich leaves a blank line when not a terminal
            return None
        if self.min_total is None:
            self._start(None)
        return self._tick

    def _start(self, total):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        from cnncli.render.console import err_console

        columns = [SpinnerColumn(), TextColumn(self.label), MofNCompleteColumn(), TimeElapsedColumn()]
        if total is not None:  # a known count: a bar and the time left
            columns[2:2] = [BarColumn()]
            columns.append(TimeRemainingColumn())
        self.bar = Progress(*columns, console=err_console(), transient=True)
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=total)

    def _tick(self, n: int, total: int | None = None) -> None:
        if self.bar is None:
            if total is None or total <= self.min_total:
                return
            self._start(total)
        self.bar.advance(self.task, n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False


@cli.command(short_help="All of a layer's activation maps for one image.")
@click.argument("model")
@click.argument("image")
@click.option("--layer", type=int, required=True, help="The N-th Conv, numbered as `cnn stats` numbers them.")
@click.option("--out", "out_dir", default="cnn-out", show_default=True, help="Output folder.")
@image_options
@format_option
def features(model, image, layer, out_dir, preset, mean, std, bgr, size, input_name, provider, verbose, max_memory, fmt):
    """All of a layer's activation maps for IMAGE as a montage, strongest first, with per-channel max, mean and zeros."""
    from cnncli.commands.features import FeatureRow, run_features
    from cnncli.render import Document, render

    mean, std, size_hw = parse_image_options(mean, std, size)
    meta, rows = run_features(model, image, layer, out_dir, size_hw, preset, mean, std, bgr, input_name, provider, verbose,
                              max_memory)
    title = f"{meta['model']} · layer {layer} ({meta['tensor']}) on {image} · montage {meta['montage']}"
    render(Document(rows=rows, row_type=FeatureRow, rows_key="channels", meta=meta, title=title), fmt, sys.stdout)


@cli.command(short_help="A conv layer's kernels as a montage.")
@click.argument("model")
@click.option("--layer", type=int, required=True, help="The N-th Conv, numbered as `cnn stats` numbers them.")
@click.option("--out", "out_dir", default="cnn-out", show_default=True, help="Output folder.")
@format_option
def filters(model, layer, out_dir, fmt):
    """A conv layer's kernels as a montage: RGB for the first layer, strongest input slice in grey deeper."""
    from cnncli.commands.filters import FilterRow, run_filters
    from cnncli.render import Document, render

    meta, rows = run_filters(model, layer, out_dir)
    title = f"{meta['model']} · layer {layer} kernels {'x'.join(map(str, meta['weight_shape']))} · montage {meta['montage']}"
    render(Document(rows=rows, row_type=FilterRow, rows_key="filters", meta=meta, title=title), fmt, sys.stdout)


def main() -> None:
    """Run the CLI, then leave without the interpreter's teardown (freeing every module and
    object one by one costs 40–60 ms, a quarter of a small `cnn stats`). cnncli registers no
    atexit handlers and closes every file it writes; the standard streams are flushed here."""
    try:
        cli.main(prog_name="cnn")
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except (BrokenPipeError, ValueError):  # the reader went away (cnn … | head): a normal end
        pass
    except OSError as exc:  # a full disk, an I/O error: the data did not all get out
        if not code:
            _echo_error(f"cannot write to standard output: {exc.strerror or exc}")
            code = 1
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(code)


def _echo_error(message: str) -> None:
    try:
        if sys.stderr is not None:
            sys.stderr.write(f"Error: {_one_line(message)}\n")
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    main()
