"""Arguments of a wrong type or size (issue 15): every option of every command, from Python or the
command line, is refused with BadArgument (exit 2, one line) when it is not a value the option
takes, never a TypeError, an OverflowError or a traceback; values past int64 or past any memory
are refused before the work; an empty picture is an error, not a blank projection; and the
memory check of `cnn top` counts the batch that will run, not the one asked for.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import cnncli
from cnncli.api.options import Options
from cnncli.cli import _COMMANDS, cli
from cnncli.errors import BadArgument
from helpers import assert_one_line_error

COMMANDS = tuple(_COMMANDS)  # every command the CLI has, the next one included
NEEDED = {"project": {"layer": 1}, "top": {"layer": 1}, "features": {"layer": 1}, "filters": {"layer": 1},
          "dream": {"layer": 1}}
HUGE = 99999999999999999999  # past int64


def options_classes() -> dict[str, type]:
    out = {}
    for name in COMMANDS:
        module = importlib.import_module(f"cnncli.api.{name}")
        [cls] = [v for v in vars(module).values()
                 if isinstance(v, type) and issubclass(v, Options) and v.__module__ == module.__name__]
        out[name] = cls
    return out


class NoInt:
    def __int__(self):
        raise TypeError("no")


# refused by every option, whatever it takes
EVERYWHERE = [object(), NoInt(), complex(1, 2), float("nan"), float("inf"), b"\xff", bytearray(b"3"), [object()],
              {"a": object()}, [[1]], np.array([[1.5]])]
# refused by the options of each kind (the check an option is declared with)
BY_KIND = {
    "integer": ["1", "3", 1.5, True, False, np.float64(2.0), [1], HUGE, -HUGE, 2**63, "", None],
    "choice": [3, True, "nope", ["cpu"], ""],
    "text": [3, True, ["a"], b"a"],
    "path": [123, 1.5, True, b"x", ["a"], "", "a\0b", "\0"],
    "flag": ["yes", 1, 0, "", np.int64(1)],
    "floats": [b"\x01\x02\x03", {0.5: 1}, "1e300", [-1e300], "a,b", "1e400", "nan", [True], ["1"], [float("nan")], {}, [], "x"],
    "dims": [3, b"\x03\x03", {3, 4}, {"a": 3}, "0x4", "-1x4", "1.5x2", f"{HUGE}x2", (2**63, 2), (1.5, 2), ["a", "b"], (True, 2), "", "x"],
    "memory_size": [-1, 0, 1.5, "1Q", "9" * 400 + "T", "-5G", True, "", [1]],
    "input_shapes": [["x"], ["=1x3"], {"x": "1x3x0x2"}, {"x": (1, HUGE)}, {"x": [1.5]}, {3: "1x2"}, ["x=1x3x1e400x2"],
                     f"x=1x3x{HUGE}x2", [f"x=1x3x{HUGE}x2"], 3],
    "channel_list": [1.5, [1.5], [True], [[1]], {1.5}, True, b"\x01", {"a": 1}],
    "fraction": [0, -0.1, "0", 10.5, "11", HUGE, 10**400, "nan", "inf", "-inf", "1e400", True, [0.5], "", "x", b"1"],
    "providers_list": ["", ",", "nope", "cpu,nope", "auto", ["cpu", 3], [b"cpu"], b"cpu", {"cpu"}, {"cpu": 1}, 3,
                       True, [], ()],
    "layer_spec": [0, -1, "0", "-1", "+0", 1.5, True, False, HUGE, "9" * 30, [1], b"1", "\u00b2", np.float64(1)],
    "count_or_all": [0, "0", "-1", "x", "", "alll", 1.5, "1.5", True, HUGE, str(HUGE), None, [1], b"1"],
    "image_size": [7, "7", "4097", (8, 5000), "1x2x3", (0, 8), "8x0", 1.5, True, "", "x", (1.5, 2), HUGE, -8, "-8",
                   f"{HUGE}x8", [8, True]],
    "positive_float": [0, -1, -0.5, "1", "0.5", True, None, 10**400, [0.1], np.float64(-1), float("-inf")],
}
BY_KIND["_b_input_shapes"] = BY_KIND["input_shapes"]


def kind_of(check) -> str:
    return check.__qualname__.split(".")[0].replace("optional_flag", "flag")


def test_every_option_of_every_command_refuses_wrong_values_with_bad_argument():
    tried = 0
    for command, cls in options_classes().items():
        base = NEEDED.get(command, {})
        for f in dataclasses.fields(cls):
            check = f.metadata.get("check")
            assert check is not None, f"{cls.__name__}.{f.name} has no check"
            kind = kind_of(check)
            assert kind in BY_KIND, f"{cls.__name__}.{f.name}: no wrong values for checks of kind {kind}"
            wrong = [v for v in BY_KIND[kind] if not (v is None and f.default is None)] + EVERYWHERE
            for value in wrong:
                with pytest.raises(BadArgument) as caught:
                    cls(**{**base, f.name: value})
                assert caught.value.param == f.metadata["flag"], (cls.__name__, f.name, value)
                tried += 1
    assert tried > 500


MODEL = Path(__file__).resolve().parent.parent / "sample_models" / "zfnet_mini.onnx"
IMAGE = MODEL.parent / "images" / "star.png"


API_CASES = [
    ("project", {"layer": "1"}), ("project", {"layer": 1.5}), ("project", {"layer": True}), ("project", {"layer": None}),
    ("project", {"layer": 1, "out": 123}), ("project", {"layer": 1, "channels": [1.5]}),
    ("project", {"layer": 1, "batch_size": 0.5}), ("project", {"layer": 1, "size": 224}),
    ("project", {"layer": 1, "batch_size": 2**64}), ("project", {"layer": 1, "max_memory": "9" * 400}),
    ("top", {"layer": 1, "k": "3"}), ("top", {"layer": 1, "seed": "x"}), ("top", {"layer": 1, "seed": -1}),
    ("top", {"layer": 1, "k": 2**64}), ("top", {"layer": 1, "workers": 2**64, "engine": "ray"}),
    ("stats", {"batch": 2**64}), ("stats", {"top": 2**70}), ("stats", {"batch": float("nan")}),
    ("connectivity", {"units": 2**64, "input": "8x8", "kernel": "3x3"}),
    ("features", {"layer": "2"}), ("filters", {"layer": 2.0}), ("filters", {"layer": 2**64}),
    ("project", {"layer": 1, "mode": "backprop", "tensor": "logits", "smooth": 2**64}),
    ("project", {"layer": 1, "mode": "backprop", "smooth": 4, "noise": float("nan")}),
    ("project", {"layer": 1, "mode": "backprop", "integrated": HUGE}),
    ("project", {"layer": 1, "mode": "backprop", "integrated": 4, "baseline": 3}),
    ("project", {"layer": 1, "mode": "backprop", "integrated": 4, "ig_method": "nope"}),
    ("cam", {"layer": HUGE}), ("cam", {"layer": 1.5}), ("cam", {"top": 2**64}), ("cam", {"classes": [1.5]}),
    ("cam", {"channel": -1}), ("cam", {"batch_size": float("nan")}), ("cam", {"method": ["gradcam"]}),
    ("dream", {"layer": 1, "steps": 2**64}), ("dream", {"layer": 1, "lr": float("nan")}),
    ("dream", {"layer": 1, "size": HUGE}), ("dream", {"layer": 1, "seed": "1"}), ("dream", {"layer": 1, "channels": [True]}),
    ("profile", {"runs": 2**64}), ("profile", {"warmup": float("inf")}), ("profile", {"batch": HUGE}),
    ("profile", {"compare_providers": 3}), ("profile", {"input": b"x.npy"}),
    ("diff", {"b_batch": HUGE}), ("diff", {"runs": "3"}), ("diff", {"b_input_shapes": {"image": (1, HUGE)}}),
    ("report", {"k": HUGE}), ("report", {"channels": float("nan")}), ("report", {"per_image": -1}),
    ("report", {"layers": [1.5]}), ("report", {"out": None}),
]


def test_python_api_wrong_values_raise_bad_argument_before_any_work():
    for call, kwargs in API_CASES:
        args = {"project": (MODEL, IMAGE), "top": (MODEL, MODEL.parent / "images"), "features": (MODEL, IMAGE),
                "stats": (MODEL,), "connectivity": (), "filters": (MODEL,), "cam": (MODEL, IMAGE), "dream": (MODEL,),
                "profile": (MODEL,), "diff": (MODEL, MODEL), "report": (MODEL, MODEL.parent / "images")}[call]
        with pytest.raises(BadArgument):
            getattr(cnncli, call)(*args, **kwargs)


CLI_CASES = [
    ["stats", MODEL, "--batch", HUGE],
    ["stats", MODEL, "--top", HUGE],
    ["stats", MODEL, "--input-shape", f"input=1x3x{HUGE}x2"],
    ["project", MODEL, IMAGE, "--layer", 1, "--size", f"{HUGE}x2"],
    ["project", MODEL, IMAGE, "--layer", 1, "--batch-size", HUGE],
    ["project", MODEL, IMAGE, "--layer", 1, "--max-memory", "9" * 400 + "T", "--top", HUGE],
    ["top", MODEL, MODEL.parent / "images", "--layer", 1, "-k", 10**12, "--channel", 0],
    ["top", MODEL, MODEL.parent / "images", "--layer", 1, "-k", HUGE],
    ["top", MODEL, MODEL.parent / "images", "--layer", 1, "--seed", -1],
    ["top", MODEL, MODEL.parent / "images", "--layer", 1, "--seed", HUGE],
    ["top", MODEL, MODEL.parent / "images", "--layer", 1, "--batch-size", HUGE],
    ["top", MODEL, MODEL.parent / "images", "--layer", 1, "--engine", "ray", "--workers", HUGE],
    ["features", MODEL, IMAGE, "--layer", HUGE],
    ["features", MODEL, IMAGE, "--layer", 1, "--mean", "1e308"],  # every pixel (x - mean) / std past float32
    ["project", MODEL, IMAGE, "--layer", 1, "--std", "1e-320"],
    ["filters", MODEL, "--layer", -HUGE],
    ["demo", "--top", HUGE],
    ["project", MODEL, IMAGE, "--layer", 1, "--tensor", "logits", "--mode", "backprop", "--smooth", HUGE],
    ["project", MODEL, IMAGE, "--layer", 1, "--mode", "backprop", "--smooth", 4, "--noise", "nan"],
    ["project", MODEL, IMAGE, "--layer", 1, "--mode", "backprop", "--smooth", 4, "--noise", "1e400"],
    ["project", MODEL, IMAGE, "--layer", 1, "--mode", "backprop", "--integrated", HUGE],
    ["project", MODEL, IMAGE, "--layer", 1, "--mode", "backprop", "--integrated", 4, "--seed", HUGE],
    ["cam", MODEL, IMAGE, "--layer", HUGE],
    ["cam", MODEL, IMAGE, "--layer", "-" + str(HUGE)],
    ["cam", MODEL, IMAGE, "--top", HUGE],
    ["cam", MODEL, IMAGE, "--class", HUGE],
    ["cam", MODEL, IMAGE, "--tensor", "logits", "--channel", HUGE],
    ["cam", MODEL, IMAGE, "--batch-size", HUGE],
    ["cam", MODEL, IMAGE, "--max-memory", "9" * 400 + "T"],
    ["dream", MODEL, "--layer", HUGE, "--channel", 0],
    ["dream", MODEL, "--layer", 1, "--channel", HUGE],
    ["dream", MODEL, "--layer", 1, "--channel", 0, "--steps", HUGE],
    ["dream", MODEL, "--layer", 1, "--channel", 0, "--lr", "nan"],
    ["dream", MODEL, "--layer", 1, "--channel", 0, "--lr", "1e400"],
    ["dream", MODEL, "--layer", 1, "--channel", 0, "--size", HUGE],
    ["dream", MODEL, "--layer", 1, "--channel", 0, "--seed", HUGE],
    ["dream", MODEL, "--layer", 1, "--channel", 0, "--batch-size", HUGE],
    ["profile", MODEL, "--runs", HUGE],
    ["profile", MODEL, "--warmup", HUGE],
    ["profile", MODEL, "--batch", HUGE],
    ["profile", MODEL, "--top", HUGE],
    ["profile", MODEL, "--input-shape", f"input=1x3x{HUGE}x2"],
    ["diff", MODEL, MODEL, "--b-batch", HUGE],
    ["diff", MODEL, "--batch", HUGE],
    ["diff", MODEL, "--b-input-shape", f"input=1x3x{HUGE}x2"],
    ["diff", MODEL, MODEL, "--measure", "--runs", HUGE],
    ["report", MODEL, MODEL.parent / "images", "-k", HUGE],
    ["report", MODEL, MODEL.parent / "images", "--channels", HUGE],
    ["report", MODEL, MODEL.parent / "images", "--layers", HUGE],
    ["report", MODEL, MODEL.parent / "images", "--per-image", HUGE],
    ["report", MODEL, MODEL.parent / "images", "--batch-size", HUGE],
]


def no_work(monkeypatch) -> None:
    """Sessions refused wherever make_session was imported by name: a run that starts the work fails."""
    import sys

    import cnncli.engine.project  # noqa: F401  (takes make_session by name at import: patched there too)
    import cnncli.runtime.sessions

    def no_session(*a, **kw):
        raise AssertionError("the work started")

    real = cnncli.runtime.sessions.make_session
    for module in [m for name, m in sys.modules.items() if name.startswith("cnncli.")]:
        if getattr(module, "make_session", None) is real:
            monkeypatch.setattr(module, "make_session", no_session)


def test_command_line_values_past_int64_or_memory_are_one_line_usage_errors(tmp_path, monkeypatch):
    no_work(monkeypatch)
    for args in CLI_CASES:
        out = [] if args[0] in ("stats", "diff") else ["--plot", tmp_path / "o"] if args[0] == "profile" else ["--out", tmp_path / "o"]
        r = CliRunner().invoke(cli, [str(a) for a in [*args, *out]])
        msg = assert_one_line_error(r, 2)
        assert len(msg) < 400, msg
        assert not (tmp_path / "o").exists()


def test_dream_counts_the_images_it_optimises_in_its_memory_check(monkeypatch):
    """--size 2048 for four channels: gigabytes of FFT parameters, Adam state and transformed
    images, which the memory check once left out (it counted the model's 112x112 input only)."""
    no_work(monkeypatch)
    r = CliRunner().invoke(cli, ["dream", str(MODEL), "--layer", "1", "--channel", "0,1,2,3", "--size", "2048",
                                 "--max-memory", "500M", "--steps", "1"])
    msg = assert_one_line_error(r, 1)
    assert "--max-memory" in msg and "2048x2048" in msg, msg


def test_python_api_wrong_inputs_raise_bad_argument():
    """The positional arguments too: IMAGES of bytes or empty, paths with a NUL, non-finite tensors."""
    wrong = [
        lambda: cnncli.top(MODEL, [b"x.png"], layer=1, channels=[0]),
        lambda: cnncli.top(MODEL, [IMAGE, 3], layer=1, channels=[0]),
        lambda: cnncli.top(MODEL, "", layer=1, channels=[0]),
        lambda: cnncli.top(MODEL, "a\0b", layer=1, channels=[0]),
        lambda: cnncli.features(MODEL, "a\0b.png", layer=1),
        lambda: cnncli.project(MODEL, IMAGE, layer=1, out="o\0ut"),
        lambda: cnncli.project(MODEL, np.full((1, 3, 112, 112), np.nan, np.float32), layer=1),
        lambda: cnncli.project(MODEL, np.full((3, 112, 112), np.inf, np.float32), layer=1),
    ]
    for call in wrong:
        with pytest.raises(BadArgument):
            call()


def dynamic_model() -> onnx.ModelProto:
    """x [1,3,H,W] (H, W symbolic) → conv 3x3 pad 1 (2 channels) → relu 'r'."""
    w = np.random.default_rng(0).normal(size=(2, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"])]
    graph = helper.make_graph(nodes, "d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])],
                              [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_an_empty_picture_is_refused_not_projected_blank(tmp_path):
    empties = [np.zeros((0, 0, 3), np.uint8), np.zeros((0, 5), np.uint8), np.zeros((5, 0, 3), np.uint8),
               np.zeros((5, 5, 0), np.uint8), Image.new("RGB", (0, 5)), Image.new("L", (7, 0)),
               np.zeros((1, 3, 0, 16), np.float32), np.zeros((3, 16, 0), np.float64), np.zeros((0, 3, 16, 16), np.float32)]
    for model in (MODEL, dynamic_model()):
        for image in empties:
            with pytest.raises(BadArgument, match="empty|uint8") as caught:
                cnncli.project(model, image, layer=1, channels=[0])
            assert caught.value.param == "image"
    np.save(tmp_path / "empty.npy", np.zeros((1, 3, 0, 8), np.float32))
    r = CliRunner().invoke(cli, ["project", str(MODEL), str(tmp_path / "empty.npy"), "--layer", "1", "--out",
                                 str(tmp_path / "o")])
    assert "empty" in assert_one_line_error(r, 2)
    assert not (tmp_path / "o").exists()


def run_top(*args):
    return CliRunner().invoke(cli, ["top", str(MODEL), str(MODEL.parent / "images"), "--layer", "1", "--channel", "0,1",
                                    "-k", "3", "--quiet", "--format", "json", *map(str, args)])


def test_top_checks_memory_for_the_batch_it_runs_not_the_batch_size_asked():
    """11 images: --batch-size 100000 runs one batch of 11, in the memory of 11 images."""
    one_at_a_time = run_top("--batch-size", 1, "--max-memory", "40M")
    assert one_at_a_time.exit_code == 0, one_at_a_time.stderr
    r = run_top("--batch-size", 100000, "--max-memory", "40M")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["channels"] == json.loads(one_at_a_time.stdout)["channels"]
    assert json.loads(r.stdout)["scanned"] == 11
    # a limit too small for the 11 images themselves is still refused, naming the 11
    r = run_top("--batch-size", 100000, "--max-memory", "10M")
    assert r.exit_code == 1 and "11 images" in r.stderr, r.stderr


def test_top_k_is_refused_when_its_table_would_not_fit():
    r = run_top("-k", 10**12)
    msg = assert_one_line_error(r, 2)
    assert "-k" in msg and "memory" in msg
    r = run_top("-k", 10**6)  # a k larger than the images: the table fits, the grid shows what there is
    assert r.exit_code == 0, r.stderr
    assert all(len(ch["entries"]) == 11 for ch in json.loads(r.stdout)["channels"])


@pytest.mark.parametrize("args,option", [
    (["--batch", "9223372036854775807"], "--batch"),              # the input alone overflows int64
    (["--batch", str(2**44)], "--batch"),                         # the input fits, conv1's output does not
    (["--input-shape", "image=1x3x4294967296x4294967296"], "--input-shape"),
    (["--input-shape", "image=1x3x5x5"], "--input-shape"),        # smaller than conv2's window
])
def test_shapes_the_user_set_too_large_or_small_are_usage_errors_naming_the_option(args, option):
    """A shape that overflows int64 or goes negative because of --batch or --input-shape is the
    user's value, not a damaged model: exit 2 naming the option."""
    result = CliRunner().invoke(cli, ["stats", str(Path(__file__).parent.parent / "sample_models" / "zfnet_paper.onnx"), *args])
    line = assert_one_line_error(result, 2)
    assert f"'{option}'" in line and "damaged" not in line
