"""The Python API (cnncli.stats, cnncli.project, cnncli.top) against the command line it is the
library of, and its own promises: any model form (path, bytes, ModelProto), any image form (path,
PIL image, uint8 picture, float input array), no files unless asked, escaped HTML, light import,
a transient progress bar for `cnn project` runs of many channels.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import cnncli
from cnncli.cli import cli
from helpers import REPO, ZFNET_PAPER

MINI = REPO / "sample_models" / "zfnet_mini.onnx"
STAR = REPO / "sample_models" / "images" / "star.png"
IMAGES = REPO / "sample_models" / "images"


def run_cli(*args) -> dict:
    r = CliRunner().invoke(cli, [*map(str, args), "--format", "json"])
    assert r.exit_code == 0, (r.stderr, r.exception)
    return json.loads(r.stdout)


# ----------------------------------------------------------------------------- stats


def markup_model() -> onnx.ModelProto:
    """x [1,3,8,8] → Conv named '<b>&[red]conv[/red]' (2 filters, 3x3): 2·3·3·3 = 54 params,
    54·6·6 = 1944 MACs."""
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="<b>&[red]conv[/red]", kernel_shape=[3, 3])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_stats_matches_the_cli_json_for_path_bytes_and_modelproto():
    doc = run_cli("stats", ZFNET_PAPER)
    for form in (ZFNET_PAPER, str(ZFNET_PAPER), ZFNET_PAPER.read_bytes(), onnx.load(str(ZFNET_PAPER))):
        s = cnncli.stats(form)
        d = s.to_dict()
        assert d["layers"] == doc["layers"]
        assert d["totals"] == doc["totals"]
        assert d["inputs"] == doc["inputs"]
        assert len(s.layers) == len(doc["layers"]) and s.layers[0].name == doc["layers"][0]["name"]
        json.dumps(d)  # plain JSON types


def test_stats_batch_and_input_shapes():
    s1 = cnncli.stats(markup_model())
    assert (s1.totals["macs"], s1.totals["params"]) == (1944, 54)
    s2 = cnncli.stats(markup_model(), input_shapes={"x": (1, 3, 10, 10)})
    assert s2.totals["macs"] == 54 * 8 * 8
    assert cnncli.stats(markup_model(), input_shapes={"x": "1x3x10x10"}).totals == s2.totals


def test_stats_html_escapes_names():
    page = cnncli.stats(markup_model())._repr_html_()
    assert "&lt;b&gt;&amp;[red]conv[/red]" in page
    assert "<b>&[red]" not in page and "[red]conv" in page
    assert page.count("<tr>") == 2 and "1944" in page


def test_the_callers_modelproto_is_not_changed():
    model = onnx.load(str(MINI))
    before = model.SerializeToString()
    cnncli.project(model, STAR, layer=2, channels=[1])
    assert model.SerializeToString() == before


def test_bad_model_type_is_a_bad_argument():
    with pytest.raises(cnncli.BadArgument):
        cnncli.stats(12)


# ----------------------------------------------------------------------------- project


def test_project_equals_the_cli_and_writes_nothing(tmp_path, monkeypatch):
    doc = run_cli("project", MINI, STAR, "--layer", 3, "--channel", "3,9", "--save-npy", "--out", tmp_path / "cli")
    monkeypatch.chdir(tmp_path)
    res = cnncli.project(str(MINI), str(STAR), layer=3, channels=[3, 9])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli"]  # no files from the API call
    assert [p.channel for p in res] == [3, 9]
    assert res.meta == {k: v for k, v in doc.items() if k != "results"} | {"input": str(STAR), "model": str(MINI),
                                                                          "contact_sheet": None}
    assert Path(doc["contact_sheet"]).is_file()  # the CLI wrote one: two channels
    for p, row in zip(res, doc["results"]):
        assert p.array.dtype == np.float32 and p.array.shape == (3, 112, 112)
        np.testing.assert_array_equal(p.array[None], np.load(row["files"]["npy"]))
        assert p.activation == pytest.approx(row["max_activation"]) and p.location == row["location"]
        np.testing.assert_array_equal(np.asarray(p.to_image()), np.asarray(Image.open(row["files"]["png"])))


def test_project_image_forms_agree(tmp_path):
    ref = cnncli.project(MINI, STAR, layer=2, channels=[5])[0].array
    pil = Image.open(STAR)
    from_pil = cnncli.project(MINI, pil, layer=2, channels=5)[0].array
    np.testing.assert_allclose(from_pil, ref, rtol=1e-5, atol=1e-6)
    pixels = np.asarray(Image.open(STAR).convert("RGB"))
    from_uint8 = cnncli.project(MINI.read_bytes(), pixels, layer=2, channels=[5])[0].array
    np.testing.assert_allclose(from_uint8, ref, rtol=1e-5, atol=1e-6)
    # a float array is the model input itself: the .npy path and the array give the same
    x = np.random.default_rng(0).standard_normal((1, 3, 112, 112)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    a = cnncli.project(MINI, x, layer=2, channels=[5])
    b = cnncli.project(MINI, tmp_path / "x.npy", layer=2, channels=[5])
    np.testing.assert_array_equal(a[0].array, b[0].array)
    assert a.meta["preprocess"] == {"preset": "none (array used as is)"}


def test_project_top_default_and_modes():
    res = cnncli.project(MINI, STAR, layer=5)
    assert len(res) == 4  # the CLI's default: the 4 strongest
    strengths = [p.activation for p in res]
    assert strengths == sorted(strengths, reverse=True)
    g = cnncli.project(MINI, STAR, layer=5, channels=[res[0].channel], mode="backprop", keep="max")
    assert g.meta["mode"] == "backprop" and g.meta["keep"] == "max"
    assert not np.allclose(g[0].array, res[0].array)
    with pytest.raises(cnncli.BadArgument):
        cnncli.project(MINI, STAR, layer=5, mode="nope")
    with pytest.raises(cnncli.BadArgument):
        cnncli.project(MINI, STAR, layer=99)


def test_project_out_writes_the_cli_files(tmp_path):
    res = cnncli.project(MINI, STAR, layer=1, channels=[0, 1], out=tmp_path, save_npy=True)
    assert [sorted(r.files) for r in res.rows] == [["figure", "npy", "png"]] * 2
    assert re.fullmatch(r"zfnet_mini_star-[0-9a-f]{8}_layer1_c0_deconvnet\.png", Path(res.rows[0].files["png"]).name)
    assert res.files == [f for r in res.rows for f in r.files.values()] + [res.meta["contact_sheet"]]
    assert all(Path(f).is_file() for f in res.files)
    fig = res.figure(1)
    assert fig.size == Image.open(res.rows[1].files["figure"]).size


# ----------------------------------------------------------------------------- top


def test_top_equals_the_cli(tmp_path):
    doc = run_cli("top", MINI, IMAGES, "--layer", 2, "--channel", "3,7", "-k", 3, "--quiet", "--out", tmp_path)
    res = cnncli.top(MINI, IMAGES, layer=2, channels=[3, 7], k=3)
    assert [c.channel for c in res] == [3, 7]
    assert res.meta["scanned"] == doc["scanned"] and res.meta["receptive_field"] == doc["receptive_field"]
    for ch, row in zip(res, doc["channels"]):
        assert [[e.image, e.location, e.box] for e in ch.entries] == \
            [[e["image"], e["location"], e["box"]] for e in row["entries"]]
        assert [e.activation for e in ch.entries] == pytest.approx([e["activation"] for e in row["entries"]])
        for e, proj, patch in zip(ch.entries, ch.projections, ch.patches):
            y0, x0, y1, x1 = e.box
            assert proj.shape == (3, y1 - y0, x1 - x0) and proj.dtype == np.float32
            pixels = np.asarray(Image.open(e.image).convert("RGB").resize((112, 112), Image.Resampling.BILINEAR))
            np.testing.assert_array_equal(patch, pixels[y0:y1, x0:x1])
    # a list of paths is an image set too
    listed = cnncli.top(MINI, sorted(str(p) for p in IMAGES.iterdir()), layer=2, channels=3, k=3)
    assert [e.image for e in listed[0].entries] == [e.image for e in res[0].entries]


# ----------------------------------------------------------------------------- names, docs, import


def test_public_names_and_their_docstrings():
    for name in cnncli.__all__:
        obj = getattr(cnncli, name)
        if name.startswith("__"):
            continue
        assert obj.__doc__, name
    for fn in (cnncli.stats, cnncli.project, cnncli.top):
        assert callable(fn) and ">>> " in fn.__doc__, fn
    from cnncli.engine.project import Projector  # the engine module of the same name loads...
    from cnncli.costs.stats import compute_stats  # noqa: F401
    from cnncli.engine.top import scan  # noqa: F401

    assert Projector and callable(cnncli.project) and cnncli.project.__module__ == "cnncli.api.project"
    assert cnncli.stats.__module__ == "cnncli.api.stats" and cnncli.top.__module__ == "cnncli.api.top"


def test_import_is_light():
    code = ("import sys, cnncli, cnncli.cli; print(sorted(m for m in ('numpy', 'onnx', 'onnxruntime', 'PIL', "
            "'matplotlib', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- progress


@pytest.mark.parametrize("channels, shown", [("all", True), ("0,1,2", False)])
def test_project_progress_bar_only_for_many_channels(tmp_path, monkeypatch, channels, shown):
    from rich.console import Console

    import cnncli.render.console

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=80)
    monkeypatch.setattr(cnncli.render.console, "err_console", lambda: console)
    r = CliRunner().invoke(cli, ["project", str(MINI), str(STAR), "--layer", "1", "--channel", channels,
                                 "--out", str(tmp_path), "--format", "json"])
    assert r.exit_code == 0, r.stderr
    assert ("projecting channels" in buf.getvalue()) is shown
    assert r.stderr == ""  # nothing else on stderr
    before = buf.getvalue()
    r = CliRunner().invoke(cli, ["project", str(MINI), str(STAR), "--layer", "1", "--channel", channels, "--quiet",
                                 "--out", str(tmp_path), "--format", "json"])
    assert r.exit_code == 0
    assert buf.getvalue() == before  # --quiet: no bar


@pytest.mark.parametrize("module", ["cnncli.api.stats", "cnncli.api.project", "cnncli.api.top"])
def test_docstring_examples_run(module, monkeypatch):
    import doctest
    import importlib

    monkeypatch.chdir(REPO)
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 2 and result.failed == 0
