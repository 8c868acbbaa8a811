"""Every command has one shape: the CLI and the Python API build the same options object, run the
same ``run`` and get the same result. For each command, the CLI (``--format json``) and the API
with the same options give equal documents, equal warnings (the CLI's stderr lines, in order)
and equal file names; the options check their values once, for both; the defaults the CLI shows
are the options' own; ``print(result)`` is the table.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import cnncli
from cnncli.api import demo, stats
from cnncli.api.options import Options
from cnncli.api.result import Result
from cnncli.cli import _COMMANDS, cli
from helpers import REPO, ZFNET_PAPER

MINI = REPO / "sample_models" / "zfnet_mini.onnx"
STAR = REPO / "sample_models" / "images" / "star.png"
IMAGES = REPO / "sample_models" / "images"


def cli_run(*args) -> tuple[dict, list[str]]:
    r = CliRunner().invoke(cli, [*map(str, args), "--format", "json"])
    assert r.exit_code == 0, (r.stderr, r.exception)
    warnings = [line[len("Warning: "):] for line in r.stderr.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == len(r.stderr.splitlines()), r.stderr  # nothing else on stderr
    return json.loads(r.stdout), warnings


def relative(doc, base: Path):
    """``doc`` with every path under ``base`` written relative to it (the two runs use two folders)."""
    text = json.dumps(doc).replace(str(base) + "/", "")
    return json.loads(text)


def names(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def same(cli_doc, cli_warnings, result, cli_dir: Path | None = None, api_dir: Path | None = None, unlisted=()):
    """``unlisted``: files the run writes for itself, not as results (the demo's manifest)."""
    api_doc = result.to_dict()
    if cli_dir is not None:
        cli_doc, api_doc = relative(cli_doc, cli_dir), relative(api_doc, api_dir)
        assert names(cli_dir) == names(api_dir)
        listed = sorted(str(Path(f).relative_to(api_dir)) for f in result.files)
        assert listed == [n for n in names(api_dir) if n not in unlisted]
    assert api_doc == cli_doc
    assert result.warnings == cli_warnings


def fixed_batch_copy(tmp_path: Path) -> Path:
    """The ZF paper net with its batch dim fixed at 1."""
    import onnx

    model = onnx.load(str(ZFNET_PAPER))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    path = tmp_path / "zf.onnx"
    onnx.save(model, str(path))
    return path


def test_stats(tmp_path):
    model = fixed_batch_copy(tmp_path)  # a fixed batch: --batch 4 warns, in the CLI and in the API
    doc, warnings = cli_run("stats", model, "--batch", 4, "--sort", "macs", "--top", 3, "--plot", tmp_path / "a" / "p.png")
    assert warnings and "--batch 4 is ignored" in warnings[0]
    res = cnncli.stats(model, batch=4, sort="macs", top=3, plot=tmp_path / "b" / "p.png")
    same(doc, warnings, res, tmp_path / "a", tmp_path / "b")
    assert [r.name for r in res.rows] == [r["name"] for r in doc["layers"]] and len(res.layers) > 3


def test_stats_by_op():
    doc, warnings = cli_run("stats", ZFNET_PAPER, "--by", "op", "--input-shape", "image=2x3x224x224")
    res = stats.run(ZFNET_PAPER, stats.StatsOptions(by="op", input_shapes=("image=2x3x224x224",)))
    same(doc, warnings, res)
    assert cnncli.stats(ZFNET_PAPER, by="op", input_shapes={"image": (2, 3, 224, 224)}).to_dict() == doc


def test_connectivity_model_and_calculator():
    doc, warnings = cli_run("connectivity", ZFNET_PAPER)
    same(doc, warnings, cnncli.connectivity(ZFNET_PAPER))
    doc, warnings = cli_run("connectivity", "--input", "100x100", "--units", 100000, "--kernel", "3x3")
    res = cnncli.connectivity(input="100x100", units=100000, kernel=(3, 3))
    same(doc, warnings, res)
    assert (res.rows[0].full, res.rows[0].local, res.rows[0].shared) == (10**9, 9 * 10**5, 9)


def test_project(tmp_path):
    args = ["--layer", 2, "--channel", "3,9", "--keep", "max", "--norm", "percentile", "--save-npy",
            "--export-reverse", tmp_path / "a" / "rev.onnx"]
    doc, warnings = cli_run("project", MINI, STAR, *args, "--out", tmp_path / "a")
    res = cnncli.project(MINI, STAR, layer=2, channels=[3, 9], keep="max", norm="percentile", save_npy=True,
                         export_reverse=tmp_path / "b" / "rev.onnx", out=tmp_path / "b")
    same(doc, warnings, res, tmp_path / "a", tmp_path / "b")
    assert [p.channel for p in res] == [3, 9]  # the arrays too


def test_project_size_is_in_the_names_of_both(tmp_path):
    """The API once named files differently from the CLI for the same --size (issue 14)."""
    model = REPO / "tests" / "fixtures" / "exporters" / "relu_chain.torchscript.onnx"
    if not model.exists():
        pytest.skip("no symbolic-size fixture")
    doc, _ = cli_run("project", model, STAR, "--layer", 1, "--channel", 0, "--size", "32x32", "--out", tmp_path / "a")
    res = cnncli.project(model, STAR, layer=1, channels=0, size=(32, 32), out=tmp_path / "b")
    assert names(tmp_path / "a") == names(tmp_path / "b") and all("32x32" in n for n in names(tmp_path / "b"))
    assert relative(res.to_dict(), tmp_path / "b") == relative(doc, tmp_path / "a")


def test_top_with_an_unreadable_image(tmp_path):
    folder = tmp_path / "imgs"
    shutil.copytree(IMAGES, folder)
    (folder / "broken.png").write_bytes(b"not a picture")
    doc, warnings = cli_run("top", MINI, folder, "--layer", 2, "--channel", "1,4", "-k", 2, "--out", tmp_path / "a",
                            "--quiet")
    assert len(warnings) == 1 and "skipped 1 unreadable image" in warnings[0]
    res = cnncli.top(MINI, folder, layer=2, channels=[1, 4], k=2, out=tmp_path / "b")
    same(doc, warnings, res, tmp_path / "a", tmp_path / "b")
    assert [ch.channel for ch in res] == [1, 4] and res.skipped == [str(folder / "broken.png")]


def test_features(tmp_path):
    doc, warnings = cli_run("features", MINI, STAR, "--layer", 3, "--out", tmp_path / "a")
    res = cnncli.features(MINI, STAR, layer=3, out=tmp_path / "b")
    same(doc, warnings, res, tmp_path / "a", tmp_path / "b")
    assert res.activations.shape[0] == len(res.rows)


def test_filters(tmp_path):
    doc, warnings = cli_run("filters", MINI, "--layer", 1, "--out", tmp_path / "a")
    res = cnncli.filters(MINI, layer=1, out=tmp_path / "b")
    same(doc, warnings, res, tmp_path / "a", tmp_path / "b")
    assert res.weights.shape[0] == len(res.rows) and res.montage.ndim == 3


def test_demo(tmp_path):
    doc, warnings = cli_run("demo", "--out", tmp_path / "a", "--top", 1, "--quiet")
    res = demo.run(demo.DemoOptions(out=str(tmp_path / "b"), top=1))
    same(doc, warnings, res, tmp_path / "a", tmp_path / "b", unlisted=(demo.MANIFEST,))


def test_api_writes_nothing_unless_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cnncli.features(MINI, STAR, layer=1)
    cnncli.filters(MINI, layer=1)
    cnncli.top(MINI, IMAGES, layer=1, channels=[0], k=1)
    assert list(tmp_path.iterdir()) == []


def options_class(name: str) -> type:
    """The one options dataclass that cnncli.api.<name> defines."""
    module = importlib.import_module(f"cnncli.api.{name}")
    [cls] = [v for v in vars(module).values()
             if isinstance(v, type) and issubclass(v, Options) and v.__module__ == module.__name__]
    return cls


COMMANDS = {name: options_class(name) for name in _COMMANDS}  # every command the CLI has, the next one included


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_click_parameters_are_the_options_fields_with_their_defaults(name):
    options = COMMANDS[name]
    params = {p.name: p for p in cli.get_command(None, name).params}
    for f in dataclasses.fields(options):
        assert f.name in params, f"{name}: option field {f.name} has no click parameter"
        p = params[f.name]
        if isinstance(p, click.Option) and not p.multiple and f.default is not None or "cli_default" in f.metadata:
            assert p.default == options.default(f.name), (name, f.name)
        assert f.metadata["flag"] in p.opts + p.secondary_opts or f.metadata["flag"] == f.name.upper()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_options_are_frozen_keyword_only_and_run_has_the_one_signature(name):
    """run(<inputs>, options, *, on_warning=None[, progress=None, …]) returning a Result (document(),
    warnings, files); the options frozen and keyword-only; the function exported from cnncli."""
    options = COMMANDS[name]
    assert options.__dataclass_params__.frozen and all(f.kw_only for f in dataclasses.fields(options)), name
    module = importlib.import_module(f"cnncli.api.{name}")
    params = list(inspect.signature(module.run).parameters.values())
    positional = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    keywords = {p.name: p for p in params if p.kind is p.KEYWORD_ONLY}
    assert positional[-1].name == "options", (name, params)
    assert "on_warning" in keywords and all(p.default is not p.empty for p in keywords.values()), (name, params)
    assert all(keywords[k].default is None for k in ("on_warning", "progress") if k in keywords), (name, params)
    returned = inspect.signature(module.run).return_annotation
    assert issubclass(getattr(module, returned) if isinstance(returned, str) else returned, Result), name
    assert name == "demo" or getattr(cnncli, name) is getattr(module, name), name  # the demo is the CLI's own


@pytest.mark.parametrize("call, param", [
    (lambda: cnncli.project(MINI, STAR, layer="1"), "--layer"),
    (lambda: cnncli.project(MINI, STAR, layer=1.5), "--layer"),
    (lambda: cnncli.project(MINI, STAR, layer=None), "--layer"),
    (lambda: cnncli.project(MINI, STAR, layer=1, out=123), "--out"),
    (lambda: cnncli.project(MINI, STAR, layer=1, mode="deconv"), "--mode"),
    (lambda: cnncli.project(MINI, STAR, layer=1, mean=[0.5, "x"]), "--mean"),
    (lambda: cnncli.project(MINI, STAR, layer=1, batch_size=True), "--batch-size"),
    (lambda: cnncli.project(MINI, STAR, layer=1, chanels=[1]), "chanels"),
    (lambda: cnncli.top(MINI, IMAGES, layer=1, k="3"), "-k"),
    (lambda: cnncli.top(MINI, IMAGES, layer=1, seed=-1), "--seed"),
    (lambda: cnncli.stats(MINI, batch=0), "--batch"),
    (lambda: cnncli.stats(MINI, input_shapes={"image": "1xfoo"}), "--input-shape"),
    (lambda: cnncli.stats(MINI, sort="nope"), "--sort"),
    (lambda: cnncli.filters(MINI, layer=[1]), "--layer"),
])
def test_wrong_python_values_are_bad_arguments(call, param):
    with pytest.raises(cnncli.BadArgument) as info:
        call()
    assert info.value.param == param


def test_print_shows_the_table():
    text = str(cnncli.stats(ZFNET_PAPER))
    assert text.splitlines()[0].startswith(str(ZFNET_PAPER)) and "conv1" in text and "1,168,032,896" in text
    assert cnncli.stats(ZFNET_PAPER).render("csv").splitlines()[0].startswith("index,name,op")


def test_python_callers_get_the_warnings_as_python_warnings(tmp_path):
    with pytest.warns(cnncli.CnnWarning, match="--batch 4 is ignored"):
        res = cnncli.stats(fixed_batch_copy(tmp_path), batch=4)
    assert len(res.warnings) == 1
