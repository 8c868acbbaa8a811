"""The `cnn` command line: parse, call the library, render. Exit codes are mapped here only.

Every command has one shape: its click parameters are named as the fields of the command's
options dataclass (``cnncli.api.<command>``), whose defaults they show; the command builds the
options (``Options.from_cli``), calls the command's ``run`` with ``on_warning`` printing each
warning as it comes, and renders the result's document with the one renderer.

0 ok; 2 bad usage (click usage errors and ``BadArgument``); 1 anything else the user can fix
(``CnnError``). Heavy libraries are imported inside the commands so `cnn --help` stays fast.
"""

from __future__ import annotations

import os
import sys

import click

from cnncli import __version__
from cnncli.choices import ENGINES, GROUPINGS, KEEPS, MODES, NORMS, PROVIDERS
from cnncli.errors import BadArgument, CnnError
from cnncli.cli_options import Output, default as _default, format_option, image_options, shape_options
from cnncli.render.progress import progress_bar


def _one_line(message: object) -> str:
    """An error message on one line (an onnx or OS message may span several), escaped as every
    message is (``cnncli.render.console.one_line``: the names and paths it quotes can send the
    terminal no control or bidi character)."""
    from cnncli.render.console import one_line

    return one_line(message)


_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2: `cnn` alone


def _escaped(exc: click.ClickException) -> click.ClickException:
    """A click error with its whole message escaped like every other message: click's own ones
    quote what was typed (``No such command '…'``, ``Invalid value for '--format': '…'``) and
    strip only CSI sequences, not OSC ones, and only off a terminal."""
    text = _one_line(exc.format_message())
    if isinstance(exc, _HELP) or text == exc.format_message():  # `cnn` alone shows the help; nothing to escape
        return exc
    new = click.UsageError(text, ctx=exc.ctx) if isinstance(exc, click.UsageError) else click.ClickException(text)
    new.exit_code = exc.exit_code
    return new


_FACTORIES: dict[str, "object"] = {}  # command name -> the function that defines it


def _lazy_command(factory):
    """Register a command by the function that defines it: a command's options module (its
    dataclasses) is imported only when that command runs or help lists it."""
    _FACTORIES[factory.__name__.lstrip("_")] = factory
    return factory


class CnnGroup(click.Group):
    def list_commands(self, ctx) -> list[str]:
        return sorted(set(self.commands) | set(_FACTORIES))

    def get_command(self, ctx, name: str):
        if name not in self.commands and name in _FACTORIES:
            self.add_command(_FACTORIES[name](), name)
        return self.commands.get(name)

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as exc:  # `cnn --no-such-option`: escaped as well
            raise _escaped(exc) from None

    def invoke(self, ctx: click.Context):
        from cnncli.render.routed_warnings import routed_warnings

        try:
            # warnings outside a run (a run collects its own and the CLI hears them as they come)
            # one line each; a run turns a crash on a damaged model file into its one-line error
            with routed_warnings():
                return super().invoke(ctx)
        except KeyboardInterrupt:  # Ctrl-C: one line, exit 130 (128 + SIGINT); atomic writes left nothing half-written
            _interrupted()
        except MemoryError:
            raise click.ClickException("not enough memory for this run") from None
        except BadArgument as exc:
            if exc.param is None:  # a rule between options: a plain usage error
                raise click.UsageError(_one_line(exc)) from None
            raise click.BadParameter(_one_line(exc), param_hint=f"'{exc.param}'") from None
        except CnnError as exc:
            raise click.ClickException(_one_line(exc)) from None
        except click.ClickException as exc:
            if isinstance(exc, click.UsageError):
                exc.ctx = None  # one line: "Error: ..." without the usage block
            raise _escaped(exc) from None
        except BrokenPipeError:  # the reader of stdout left (cnn … | head): a normal end, exit 0
            raise click.exceptions.Exit(0) from None


def _interrupted() -> None:
    from cnncli.render.process import say, wind_down

    wind_down()
    say("Interrupted.")
    raise click.exceptions.Exit(130)


def _warn(text: str) -> None:
    from cnncli.render.console import warn

    warn(text)


@click.group(cls=CnnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="cnn")
def cli() -> None:
    """What each layer of an ONNX CNN costs, and what each feature map has learned."""


@_lazy_command
def _stats() -> click.Command:
    from cnncli.api.stats import StatsOptions

    @click.command(short_help="Per-layer MACs, params, CPR, memory and receptive field.")
    @click.argument("model")
    @shape_options
    @format_option
    @click.option("--by", type=click.Choice(GROUPINGS), default=_default(StatsOptions, "by"), show_default=True,
                  help="One row per layer, or per op type.")
    @click.option("--sort", metavar="COLUMN", help="Sort rows by a column (numbers largest first).")
    @click.option("--top", type=click.IntRange(min=1), metavar="N", help="Keep only the first N rows (after --sort).")
    @click.option("--plot", type=click.Path(dir_okay=False), metavar="FILE.png", help="Save a per-layer cost plot.")
    def stats(model, fmt, columns, wide, **params):
        """Per-layer MACs, params, CPR, activation memory and receptive field of MODEL (a path, or - for stdin)."""
        from cnncli.api import stats as command

        options = StatsOptions.from_cli(params)
        out = Output(fmt, columns, wide, command.row_type(options.by))
        out.write(command.run(model, options, on_warning=_warn))
    return stats


@_lazy_command
def _connectivity() -> click.Command:
    from cnncli.api.connectivity import ConnectivityOptions

    @click.command(short_help="Weights fully connected vs locally connected vs shared.")
    @click.argument("model", required=False)
    @shape_options
    @format_option
    @click.option("--input", metavar="HxW", help="Calculator: image size (or CxHxW).")
    @click.option("--units", type=click.IntRange(min=1), help="Calculator: number of hidden units.")
    @click.option("--kernel", metavar="KxK", help="Calculator: window size of a locally connected unit.")
    def connectivity(model, fmt, columns, wide, **params):
        """Weights of each conv layer fully connected vs locally connected vs shared.

        Give MODEL, or the calculator form: --input 100x100 --units 100000 --kernel 3x3.
        """
        from cnncli.api import connectivity as command

        out = Output(fmt, columns, wide, command.row_type())
        out.write(command.run(model, ConnectivityOptions.from_cli(params), on_warning=_warn))
    return connectivity


@_lazy_command
def _project() -> click.Command:
    from cnncli.api.project import ProjectOptions

    @click.command(short_help="Project feature maps back to pixels (deconvnet).")
    @click.argument("model")
    @click.argument("image", metavar="INPUT")
    @click.option("--layer", type=int, help="The N-th Conv, numbered as `cnn stats` numbers them (its block output).")
    @click.option("--tensor", help="Any 4-D tensor of the graph, or a 2-D one such as the logits.")
    @click.option("--channel", "channels", metavar="N[,N…]|all", help="Channels to project.")
    @click.option("--top", type=int, metavar="K", help="The K channels with the largest activation on this input [default: 4, or all if fewer].")
    @click.option("--mode", type=click.Choice(MODES), default=_default(ProjectOptions, "mode"), show_default=True)
    @click.option("--keep", type=click.Choice(KEEPS), default=_default(ProjectOptions, "keep"), show_default=True,
                  help="Seed the channel's whole map, or only its strongest activation.")
    @click.option("--norm", type=click.Choice(NORMS), default=_default(ProjectOptions, "norm"), show_default=True,
                  help="How projections become pixels (grey: 0 at mid-grey, symmetric scale).")
    @click.option("--out", default=_default(ProjectOptions, "out"), show_default=True, help="Output folder.")
    @click.option("--save-npy", is_flag=True, default=_default(ProjectOptions, "save_npy"), help="Also save the raw float32 projection, shaped like the model input.")
    @click.option("--export-reverse", type=click.Path(dir_okay=False), metavar="FILE.onnx", help="Write the generated reverse graph.")
    @click.option("--batch-size", type=click.IntRange(min=1), default=_default(ProjectOptions, "batch_size"), show_default=True,
                  help="Channels per batched reverse run.")
    @click.option("--figure/--no-figure", default=_default(ProjectOptions, "figure"), show_default=True,
                  help="Write the input | projection | overlay figure beside each projection PNG.")
    @click.option("--quiet", is_flag=True, help="No progress bar.")
    @image_options
    @format_option
    def project(model, image, quiet, fmt, columns, wide, **params):
        """Project feature maps of MODEL on INPUT (an image or a .npy) back to pixels (Zeiler & Fergus deconvnet)."""
        from cnncli.api import project as command

        out = Output(fmt, columns, wide, command.ProjectionRow)
        options = ProjectOptions.from_cli(params)
        with progress_bar(quiet, "projecting channels", min_total=8) as tick:
            result = command.run(model, image, options, progress=tick, on_warning=_warn, arrays=False)
        out.write(result)
    return project


@_lazy_command
def _demo() -> click.Command:
    from cnncli.api.demo import DemoOptions

    @click.command(short_help="The whole tool on the bundled trained network and photos.")
    @click.option("--out", default=_default(DemoOptions, "out"), show_default=True, help="Folder for the gallery.")
    @click.option("--top", type=click.IntRange(min=1), default=_default(DemoOptions, "top"), show_default=True,
                  help="Channels per layer and image.")
    @click.option("--provider", type=click.Choice(PROVIDERS), default=_default(DemoOptions, "provider"), show_default=True)
    @click.option("--quiet", is_flag=True, help="No progress messages on stderr.")
    @format_option
    def demo(quiet, fmt, columns, wide, **params):
        """Stats, connectivity and projections of the bundled trained network on the bundled photos, as a gallery."""
        from cnncli.api import demo as command
        from cnncli.render.console import info

        out = Output(fmt, columns, wide, command.DemoRow)
        out.write(command.run(DemoOptions.from_cli(params), progress=None if quiet else info, on_warning=_warn))
    return demo


@_lazy_command
def _top() -> click.Command:
    from cnncli.api.top import TopOptions

    @click.command(short_help="Top-k activations over your images, with RF patches.")
    @click.argument("model")
    @click.argument("images")
    @click.option("--layer", type=int, required=True, help="The N-th Conv, numbered as `cnn stats` numbers them.")
    @click.option("--channel", "channels", metavar="N[,N…]", help="Channels to show.")
    @click.option("--channels", "n_channels", metavar="K|all", help="K channels chosen at random (--seed), or all [default: 16].")
    @click.option("--seed", type=int, default=_default(TopOptions, "seed"), show_default=True,
                  help="Seed for the random choice of channels.")
    @click.option("-k", "k", type=click.IntRange(min=1), default=_default(TopOptions, "k"), show_default=True,
                  help="Top activations per channel.")
    @click.option("--mode", type=click.Choice(MODES), default=_default(TopOptions, "mode"), show_default=True)
    @click.option("--batch-size", type=click.IntRange(min=1), default=_default(TopOptions, "batch_size"), show_default=True,
                  help="Images per forward run.")
    @click.option("--out", default=_default(TopOptions, "out"), show_default=True, help="Output folder.")
    @click.option("--quiet", is_flag=True, help="No progress bar.")
    @click.option("--engine", type=click.Choice(ENGINES), default=_default(TopOptions, "engine"), show_default=True,
                  help="Scan in this process, or on Ray Data (pip install 'cnncli[ray]').")
    @click.option("--address", metavar="ADDRESS", help="Ray: join this cluster ('auto', 'ray://host:10001') [default: start a local runtime].")
    @click.option("--workers", type=click.IntRange(min=1), metavar="N", help="Ray: model actors, one session each [default: from the cluster].")
    @image_options
    @format_option
    def top(model, images, quiet, fmt, columns, wide, **params):
        """The top-k activations of a layer's feature maps over IMAGES (a folder, a glob, a text file of
        paths, or - for paths on stdin), each projected alone beside its receptive-field patch."""
        from cnncli.api import top as command

        out = Output(fmt, columns, wide, command.ChannelTopRow)
        options = TopOptions.from_cli(params)
        with progress_bar(quiet, "scanning images") as tick:
            result = command.run(model, images, options, stdin=sys.stdin if images == "-" else None, progress=tick,
                                 on_warning=_warn, arrays=False)
        out.write(result)
    return top


@_lazy_command
def _features() -> click.Command:
    from cnncli.api.features import FeaturesOptions

    @click.command(short_help="All of a layer's activation maps for one image.")
    @click.argument("model")
    @click.argument("image")
    @click.option("--layer", type=int, required=True, help="The N-th Conv, numbered as `cnn stats` numbers them.")
    @click.option("--out", default=_default(FeaturesOptions, "out"), show_default=True, help="Output folder.")
    @image_options
    @format_option
    def features(model, image, fmt, columns, wide, **params):
        """All of a layer's activation maps for IMAGE as a montage, strongest first, with per-channel max, mean and zeros."""
        from cnncli.api import features as command

        out = Output(fmt, columns, wide, command.FeatureRow)
        out.write(command.run(model, image, FeaturesOptions.from_cli(params), on_warning=_warn))
    return features


@_lazy_command
def _filters() -> click.Command:
    from cnncli.api.filters import FiltersOptions

    @click.command(short_help="A conv layer's kernels as a montage.")
    @click.argument("model")
    @click.option("--layer", type=int, required=True, help="The N-th Conv, numbered as `cnn stats` numbers them.")
    @click.option("--out", default=_default(FiltersOptions, "out"), show_default=True, help="Output folder.")
    @format_option
    def filters(model, fmt, columns, wide, **params):
        """A conv layer's kernels as a montage: RGB for the first layer, strongest input slice in grey deeper."""
        from cnncli.api import filters as command

        out = Output(fmt, columns, wide, command.FilterRow)
        out.write(command.run(model, FiltersOptions.from_cli(params), on_warning=_warn))
    return filters


def main() -> None:
    """Run the CLI, then leave without the interpreter's teardown (freeing every module and
    object one by one costs 40–60 ms, a quarter of a small `cnn stats`). The process is set up
    first and wound down here (cnncli/render/process.py): closed standard streams, a stderr whose
    failures lose messages only, SIGTERM and SIGHUP ending the run as Ctrl-C does, the standard
    streams flushed and the run's own folders removed (``os._exit`` runs no atexit handler)."""
    from cnncli.atomic import remove_run_folders
    from cnncli.render import process

    process.prepare()
    try:
        code = process.flushed(_run())
    except process.Terminated as exc:  # exit 128 + the signal; atomic writes left nothing half-written
        process.wind_down()
        process.say(exc.line)
        code = exc.exit_code
    remove_run_folders()
    os._exit(code)


def _run() -> int:
    try:
        cli.main(prog_name="cnn")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        from cnncli.render.process import say

        say(f"Error: {_one_line(exc.code)}")
        return 1
    return 0


if __name__ == "__main__":
    main()
