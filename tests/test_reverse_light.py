"""Every model-zoo graph that ships inside the onnx package (tests/data/light: real architectures,
weights replaced by ConstantOfShape 0.02) projects from its first and its last conv layer in all
three modes: the reverse graph builds, onnxruntime runs it, and the result has the input's shape.

With constant positive weights, deep nets overflow to inf, so only the first layer is checked for
finite values.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import LIGHT_DIR

from cnncli.frontend.graph import analyse
from cnncli.engine.project import Projector
from cnncli.engine.targets import by_layer, conv_nodes

MODES = ("deconvnet", "backprop", "guided")
LIGHT = sorted(p.name[len("light_"):-len(".onnx")] for p in LIGHT_DIR.glob("light_*.onnx"))


def test_light_models_are_there():
    assert len(LIGHT) >= 9, LIGHT


@pytest.mark.parametrize("name", LIGHT)
def test_light_model_projects_first_and_last_conv(name):
    model = onnx.load(str(LIGHT_DIR / f"light_{name}.onnx"))
    graph = analyse(model)
    (spec,) = graph.inputs
    x = np.random.default_rng(0).uniform(0, 1, spec.shape).astype(np.float32)
    n_convs = len(conv_nodes(graph))
    assert n_convs > 1
    for layer in (1, n_convs):
        target = by_layer(graph, layer)
        n_channels = target.shape[1]
        for mode in MODES:
            p = Projector(model, graph, spec.name, target.tensor, mode)
            results = p.project(x, [0, n_channels - 1], keep="map")
            assert [r.channel for r in results] == [0, n_channels - 1]
            for r in results:
                assert r.projection.shape == spec.shape[1:], (name, layer, mode)
                assert r.projection.dtype == np.float32
                if layer == 1:
                    assert np.isfinite(r.projection).all(), (name, mode)
