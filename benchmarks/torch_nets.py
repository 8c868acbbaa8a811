"""The ZF-style network of bench_project.py as a PyTorch module, for the comparison with Captum.

Its weights are read from the ONNX file bench_project.py writes (benchmarks/_work/zf_random.onnx),
so both sides compute with the same numbers. Each ReLU is its own nn.ReLU module (not inplace,
not reused): Captum's deconvolution hooks nn.ReLU modules only, and a functional relu would be
silently left unmodified. There is no LRN: Captum would differentiate it, while the paper's
deconvnet (and cnncli in deconvnet mode) skips it, so the two would not be comparable.

Needs torch (and captum for the benchmark): /work/venv-bench-torch, made by

    python3 -m venv /work/venv-bench-torch
    /work/venv-bench-torch/bin/pip install torch==2.13.0 captum numpy onnx onnxruntime pillow
    /work/venv-bench-torch/bin/pip install -e /work/main
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from zf_layers import ZF_LAYERS


class SwitchPool(nn.Module):
    """3x3/2 ceil-mode max-pool; with ``switches`` set (per-plane flat indices [1, C, OH, OW], as
    onnxruntime chose them) it routes by those instead of its own argmax. The forward values are
    the same maxima; only near-ties (two values within float rounding) may pick another position."""

    def __init__(self):
        super().__init__()
        self.switches: torch.Tensor | None = None

    def forward(self, x):
        if self.switches is None:
            return F.max_pool2d(x, 3, 2, ceil_mode=True)
        n, c = x.shape[:2]
        idx = self.switches.expand(n, -1, -1, -1)
        return x.flatten(2).gather(2, idx.flatten(2)).view(n, c, *idx.shape[2:])


class ZFNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList()
        self.relus = nn.ModuleList()
        self.pools = nn.ModuleDict()
        cin = 3
        for name, cout, k, stride, pad, pool in ZF_LAYERS:
            self.convs.append(nn.Conv2d(cin, cout, k, stride=stride, padding=pad))
            self.relus.append(nn.ReLU(inplace=False))
            if pool:
                self.pools[name] = SwitchPool()
            cin = cout
        self.upto = len(ZF_LAYERS)  # run only conv1 .. conv<upto> (and its ReLU)

    def forward(self, x):
        for (name, *_), conv, relu in zip(ZF_LAYERS[:self.upto], self.convs, self.relus):
            x = relu(conv(x))
            if name in self.pools:
                x = self.pools[name](x)
        return x

    def set_switches(self, per_plane: dict[str, np.ndarray] | None) -> None:
        """Route the pools by given switches ({"pool1": per-plane flat indices [1, C, OH, OW]}),
        or by their own argmax (None)."""
        for name, pool in self.pools.items():
            idx = None if per_plane is None else per_plane.get(f"pool{name[-1]}")
            pool.switches = None if idx is None else torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64))

    @classmethod
    def from_onnx(cls, path: str) -> "ZFNet":
        weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
        net = cls()
        with torch.no_grad():
            for (name, *_), conv in zip(ZF_LAYERS, net.convs):
                conv.weight.copy_(torch.from_numpy(weights[f"{name}_w"].copy()))
                conv.bias.copy_(torch.from_numpy(weights[f"{name}_b"].copy()))
        return net
