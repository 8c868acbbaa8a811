"""Outputs no input can take from another (issue 15): inputs whose stems are alike, or whose names
sanitise alike, get files of their own in one --out, in one run and across runs, for every command
that names files after its inputs; and `cnn demo` removes only its own files, whatever its manifest
says (symlinked folders, absolute paths, `..`, links, a manifest that is not a list of names).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import cnncli
from cnncli.cli import cli

# pairs of image names that a stem, or the sanitised stem, cannot tell apart
ALIKE = [("a/cat.png", "b/cat.jpg"), ("a/cat.png", "b/cat.png"), ("猫.jpg", "犬.png"), ("x y.jpg", "x_y.jpg"),
         ("a/photo.jpeg", "photo.png")]


def tiny_model(seed: int = 0) -> onnx.ModelProto:
    """x [N,3,16,16] (N symbolic) → conv (4 channels, 3x3 pad 1) → relu 'r1'."""
    w = np.random.default_rng(seed).normal(size=(4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"])]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("r1", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def picture(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.random.default_rng(seed).random((20, 20, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture()
def model(tmp_path) -> Path:
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), str(path))
    return path


def invoke(*args) -> dict:
    quiet = ["--quiet"] if args[0] in ("project", "top", "demo") else []  # the commands with a progress bar
    r = CliRunner().invoke(cli, [*map(str, args), "--format", "json", *quiet])
    assert r.exit_code == 0, (r.stderr, r.exception)
    return json.loads(r.stdout)


def written(doc: dict) -> list[str]:
    rows = doc.get("results") or doc.get("channels") or []
    files = [f for r in rows for f in r.get("files", {}).values()]
    return files + [doc[k] for k in ("montage", "overview", "contact_sheet") if doc.get(k)]


def snapshot(files) -> dict[str, bytes]:
    return {f: Path(f).read_bytes() for f in files}


def two_runs_keep_apart(run_a, run_b) -> None:
    """run_a twice (the same names: its own files replaced), then run_b: none of run_a's files
    replaced, and every file of both runs is there."""
    first = written(run_a())
    assert sorted(written(run_a())) == sorted(first)  # the same input: the same names
    before = snapshot(first)
    second = written(run_b())
    assert first and second and not set(first) & set(second)
    assert snapshot(first) == before
    assert all(Path(f).is_file() for f in second)


@pytest.mark.parametrize("names", ALIKE, ids=["same-stem", "same-name", "cjk", "space-underscore", "folder"])
def test_project_keeps_inputs_with_alike_names_apart(model, tmp_path, names):
    a, b = (picture(tmp_path / "in" / n, seed) for seed, n in enumerate(names))
    out = tmp_path / "out"
    args = ["--layer", 1, "--channel", "all", "--out", out, "--save-npy"]
    two_runs_keep_apart(lambda: invoke("project", model, a, *args), lambda: invoke("project", model, b, *args))
    assert len(list(out.iterdir())) == 2 * (4 * 3 + 1)  # png, figure, npy; 4 channels; a contact sheet; 2 images


@pytest.mark.parametrize("names", ALIKE[:3], ids=["same-stem", "same-name", "cjk"])
def test_features_keeps_inputs_with_alike_names_apart(model, tmp_path, names):
    a, b = (picture(tmp_path / "in" / n, seed) for seed, n in enumerate(names))
    out = tmp_path / "out"
    two_runs_keep_apart(lambda: invoke("features", model, a, "--layer", 1, "--out", out),
                        lambda: invoke("features", model, b, "--layer", 1, "--out", out))


def test_models_with_one_stem_in_two_folders_keep_their_files_apart(tmp_path):
    image = picture(tmp_path / "cat.png", 0)
    models = []
    for seed, folder in enumerate(("a", "b")):
        (tmp_path / folder).mkdir()
        models.append(tmp_path / folder / "net.onnx")
        onnx.save(tiny_model(seed), str(models[-1]))
    out = tmp_path / "out"
    for command in (["filters"], ["features", "IMAGE"], ["project", "IMAGE", "--channel", 0]):
        def run(m, command=command):
            args = [image if a == "IMAGE" else a for a in command[1:]]
            return invoke(command[0], m, *args, "--layer", 1, "--out", out)

        two_runs_keep_apart(lambda: run(models[0]), lambda: run(models[1]))


def test_top_keeps_image_sets_with_one_name_apart(model, tmp_path):
    """Two folders both called 'photos', two lists on standard input, and another set of
    channels (its own overview) into one --out."""
    a, b = tmp_path / "a" / "photos", tmp_path / "b" / "photos"
    for folder, seed in ((a, 0), (b, 10)):
        for i in range(3):
            picture(folder / f"p{i}.png", seed + i)
    out = tmp_path / "out"
    args = ["--layer", 1, "-k", 2, "--out", out]
    two_runs_keep_apart(lambda: invoke("top", model, a, "--channel", "0,1", *args),
                        lambda: invoke("top", model, b, "--channel", "0,1", *args))
    two_runs_keep_apart(lambda: invoke("top", model, a, "--channel", "0,1", *args),
                        lambda: invoke("top", model, a, "--channel", "2,3", *args))

    def stdin_run(folder):
        listing = "".join(f"{p}\n" for p in sorted(folder.iterdir()))
        r = CliRunner().invoke(cli, ["top", str(model), "-", *map(str, args), "--channel", "0", "--format", "json",
                                     "--quiet"], input=listing)
        assert r.exit_code == 0, r.stderr
        return json.loads(r.stdout)

    two_runs_keep_apart(lambda: stdin_run(a), lambda: stdin_run(b))


def test_images_and_models_given_in_memory_keep_their_files_apart(tmp_path):
    out = tmp_path / "out"
    rng = np.random.default_rng(3)
    arrays = [(rng.random((20, 20, 3)) * 255).astype(np.uint8) for _ in range(2)]

    def project(image, model=None):
        res = cnncli.project(model or tiny_model(), image, layer=1, channels=[0], out=out)
        return {"results": [{"files": r.files} for r in res.rows]}

    two_runs_keep_apart(lambda: project(arrays[0]), lambda: project(arrays[1]))
    two_runs_keep_apart(lambda: project(Image.fromarray(arrays[0])), lambda: project(Image.fromarray(arrays[1])))
    floats = [rng.random((1, 3, 16, 16)).astype(np.float32) for _ in range(2)]
    two_runs_keep_apart(lambda: project(floats[0]), lambda: project(floats[1]))
    two_runs_keep_apart(lambda: project(arrays[0], tiny_model(0).SerializeToString()),
                        lambda: project(arrays[0], tiny_model(1).SerializeToString()))


# ----------------------------------------------------------------------------- cnn demo's manifest


def test_demo_removes_nothing_outside_its_folder_nor_anything_it_did_not_write(tmp_path):
    from cnncli.api.demo import MANIFEST

    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    for name in ("keep.txt", "keep.png", "index.html", "stats.json", "sub/x.png"):
        (outside / name).write_text("the user's")
    out = tmp_path / "demo"
    (out / "img").mkdir(parents=True)
    (out / "d").symlink_to(outside, target_is_directory=True)  # a folder link leading out
    (out / "img" / "sub").symlink_to(outside / "sub", target_is_directory=True)
    (out / "img" / "link.png").symlink_to(outside / "keep.png")  # a link inside, to a file outside
    (out / "mine.txt").write_text("the user's")
    (out / "img" / "mine.png").write_text("the user's")  # a demo-like name, not the demo's
    hostile = ["d/keep.txt", "d/keep.png", "d/index.html", "d/stats.json", "img/sub/x.png", "img/link.png",
               str(outside / "keep.txt"), "../outside/keep.txt", "img/../../outside/keep.png", "./../outside/keep.txt",
               "mine.txt", "img//../mine.txt", "d/../mine.txt", "\x00", "img\\..\\..\\outside\\keep.png",
               "img/stale.png"]  # the last: a picture of the demo's own earlier run, which goes
    (out / "img" / "stale.png").write_bytes(b"an earlier run's")
    (out / MANIFEST).write_text(json.dumps(hostile))
    r = CliRunner().invoke(cli, ["demo", "--out", str(out), "--top", "1", "--quiet", "--format", "json"])
    assert r.exit_code == 0, r.stderr
    for name in ("keep.txt", "keep.png", "index.html", "stats.json", "sub/x.png"):
        assert (outside / name).read_text() == "the user's", name
    assert (out / "mine.txt").read_text() == "the user's"
    assert (out / "img" / "mine.png").read_text() == "the user's"
    assert (out / "img" / "link.png").is_symlink()
    assert not (out / "img" / "stale.png").exists()


@pytest.mark.parametrize("manifest", ['{"img/a.png": 1}', '["img/a.png", 3]', "not json", "\xff\xfe", '"img/a.png"',
                                      "symlink"])
def test_a_damaged_or_linked_manifest_removes_nothing_with_one_warning(tmp_path, manifest):
    from cnncli.api.demo import MANIFEST, read_manifest, replace_manifest

    out = tmp_path / "demo"
    (out / "img").mkdir(parents=True)
    (out / "img" / "a.png").write_bytes(b"an earlier run's")
    if manifest == "symlink":  # a link to a list that would name the file
        (tmp_path / "list.json").write_text('["img/a.png"]')
        (out / MANIFEST).symlink_to(tmp_path / "list.json")
    else:
        (out / MANIFEST).write_bytes(manifest.encode("latin-1"))
    with pytest.warns(cnncli.CnnWarning) as heard:
        previous = read_manifest(out)
    assert len(heard) == 1 and MANIFEST in str(heard[0].message)
    (out / "img" / "b.png").write_bytes(b"this run's")
    replace_manifest(out, previous, [str(out / "img" / "b.png")])
    assert (out / "img" / "a.png").read_bytes() == b"an earlier run's"
    assert json.loads((out / MANIFEST).read_text()) == ["img/b.png"]
    assert not (out / MANIFEST).is_symlink()
    if manifest == "symlink":
        assert json.loads((tmp_path / "list.json").read_text()) == ["img/a.png"]


def _demo_with_linked_pictures(tmp_path, name: str):
    """A folder outside holding the user's ``name``, and a demo folder whose img/ links to it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / name).write_bytes(b"the user's")
    out = tmp_path / "demo"
    out.mkdir()
    (out / "img").symlink_to(outside, target_is_directory=True)
    return outside, out


def test_a_linked_picture_folder_is_not_emptied_through_the_link(tmp_path):
    """img/ itself a link to a folder outside: a manifest naming img/keep.png removes nothing there."""
    from cnncli.api.demo import MANIFEST, read_manifest, replace_manifest

    outside, out = _demo_with_linked_pictures(tmp_path, "keep.png")
    (out / MANIFEST).write_text(json.dumps(["img/keep.png", "index.html"]))
    (out / "index.html").write_text("this run's")
    replace_manifest(out, read_manifest(out), [str(out / "index.html")])
    assert (outside / "keep.png").read_bytes() == b"the user's"


def test_tensors_whose_names_are_made_safe_alike_keep_their_files_apart(tmp_path):
    """'c 1' (made safe: 'c_1') and 'c_1', two tensors of one model, projected into one --out."""
    w = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c 1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c 1"], ["c_1"]), helper.make_node("Sigmoid", ["c_1"], ["c/1"])]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("c/1", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "W")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    model = tmp_path / "m.onnx"
    onnx.save(m, str(model))
    image = picture(tmp_path / "cat.png", 0)
    out = tmp_path / "out"

    def run(tensor):
        return lambda: invoke("project", model, image, "--tensor", tensor, "--channel", "all", "--out", out)

    two_runs_keep_apart(run("c 1"), run("c_1"))
    two_runs_keep_apart(run("c_1"), run("c/1"))
    assert len(list(out.iterdir())) == 3 * (4 * 2 + 1)  # png and figure of 4 channels, a contact sheet; 3 tensors


def test_demo_refuses_a_picture_folder_that_links_elsewhere(tmp_path):
    """img/ a link to another folder: the demo's pictures would replace files there."""
    outside, out = _demo_with_linked_pictures(tmp_path, "star_input.png")
    r = CliRunner().invoke(cli, ["demo", "--out", str(out), "--top", "1", "--quiet"])
    assert r.exit_code == 1 and "symbolic link" in r.stderr, r.stderr
    assert sorted(p.name for p in outside.iterdir()) == ["star_input.png"]
    assert (outside / "star_input.png").read_bytes() == b"the user's"


# ----------------------------------------------------------------------------- the new commands (issues 17-19)


@pytest.mark.parametrize("names", ALIKE[:3], ids=["same-stem", "same-name", "cjk"])
def test_cam_keeps_inputs_with_alike_names_apart(model, tmp_path, names):
    a, b = (picture(tmp_path / "in" / n, seed) for seed, n in enumerate(names))
    out = tmp_path / "out"
    args = ["--layer", 1, "--tensor", "r1", "--channel", 0, "--out", out, "--save-npy", "--quiet"]
    two_runs_keep_apart(lambda: invoke("cam", model, a, *args), lambda: invoke("cam", model, b, *args))


def test_dream_of_models_with_one_stem_keeps_their_files_apart(tmp_path):
    models = []
    for seed, folder in enumerate(("a", "b")):
        (tmp_path / folder).mkdir()
        models.append(tmp_path / folder / "net.onnx")
        onnx.save(tiny_model(seed), str(models[-1]))
    args = ["--layer", 1, "--channel", "0,1", "--steps", 2, "--size", 16, "--out", tmp_path / "out", "--quiet"]
    two_runs_keep_apart(lambda: invoke("dream", models[0], *args), lambda: invoke("dream", models[1], *args))


@pytest.mark.parametrize("command", ["profile", "stats"])
def test_plot_never_replaces_the_model(tmp_path, command):
    """A model file named .png, given again as --plot (as it is, or through a link): refused
    before the run, the model left as it was."""
    model = tmp_path / "m.png"
    onnx.save(tiny_model(), str(model))
    before = model.read_bytes()
    (tmp_path / "link.png").symlink_to(model)
    extra = ["--runs", "1", "--warmup", "0"] if command == "profile" else []
    for plot in (model, tmp_path / "link.png", tmp_path / "." / "m.png"):
        r = CliRunner().invoke(cli, [command, str(model), *extra, "--plot", str(plot)])
        assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "'--plot'" in r.stderr, (r.stderr, r.exception)
        assert model.read_bytes() == before


def test_report_never_replaces_a_page_it_did_not_write(model, tmp_path):
    """--out holding the user's own index.html or stats.json (no earlier report listed them):
    refused before any picture is written; a folder a report made is written again."""
    images = tmp_path / "in"
    picture(images / "a.png", 0)
    args = ["report", str(model), str(images), "--out", str(tmp_path / "out"), "--per-image", "1", "--quiet"]
    for name in ("index.html", "stats.json"):
        out = tmp_path / "out"
        out.mkdir()
        (out / name).write_text("the user's")
        r = CliRunner().invoke(cli, args)
        errors = [line for line in r.stderr.splitlines() if line.startswith("Error: ")]  # (after the model's warnings)
        assert r.exit_code == 1 and errors == r.stderr.splitlines()[-1:] and name in errors[0], (r.stderr, r.exception)
        assert [p.name for p in out.iterdir()] == [name] and (out / name).read_text() == "the user's"
        (out / name).unlink()
        out.rmdir()
    for _ in range(2):  # its own page, written twice
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 0, (r.stderr, r.exception)
    assert "the user's" not in (tmp_path / "out" / "index.html").read_text()
