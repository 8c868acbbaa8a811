"""Write the benchmark models into benchmarks/_work/ (gitignored).

* ``chain_<N>.onnx`` for N = 4,000, 8,000 and 16,000: N Conv+Relu pairs (2N nodes), 8 channels,
  3x3 kernels with pad 1 on a 1x8x32x32 input, every weight and bias an initializer (random,
  seeded, so the files are the same on every run).
* ``external_3g.onnx`` + ``external_3g.bin``: a small CNN head (Conv 64->64 3x3, Relu, Flatten)
  then three 16384x16384 Gemm layers with Relu between them: 3 GiB of float32 weights (plus
  a few KB for the conv) kept in one external data file. The data file is created with
  ``truncate`` (a sparse file of zeros), so making it takes neither 3 GiB of RAM nor of disk.

Needs only numpy and onnx. Run with the venv that has cnncli installed:

    python benchmarks/make_models.py            # all models, skipping those already made
    python benchmarks/make_models.py --force    # rewrite them
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

WORK = Path(__file__).resolve().parent / "_work"
CHAIN_PAIRS = (4000, 8000, 16000)
CHANNELS = 8
HW = 32
GEMM_DIM = 16384  # 16384*16384 float32 = 1 GiB per Gemm weight
GEMM_LAYERS = 3
CONV_CH = 64  # 64x16x16 = 16384 features after Flatten
EXTERNAL_NAME = "external_3g"
OPSET = 17
ALIGN = 4096


def chain_path(pairs: int) -> Path:
    return WORK / f"chain_{pairs}.onnx"


def external_path() -> Path:
    return WORK / f"{EXTERNAL_NAME}.onnx"


def _tensor(name: str, array: np.ndarray) -> TensorProto:
    t = TensorProto()
    t.name = name
    t.data_type = TensorProto.FLOAT
    t.dims.extend(array.shape)
    t.raw_data = np.ascontiguousarray(array, dtype="<f4").tobytes()
    return t


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="cnncli-bench")
    model.ir_version = 8
    return model


def build_chain(pairs: int) -> onnx.ModelProto:
    rng = np.random.default_rng(pairs)
    g = onnx.GraphProto()
    g.name = f"chain_{pairs}"
    g.input.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CHANNELS, HW, HW]))
    x = "x"
    for i in range(pairs):
        w, b, c, r = f"conv{i}_w", f"conv{i}_b", f"conv{i}", f"relu{i}"
        g.initializer.append(_tensor(w, rng.standard_normal((CHANNELS, CHANNELS, 3, 3), dtype=np.float32) * 0.1))
        g.initializer.append(_tensor(b, np.zeros(CHANNELS, np.float32)))
        g.node.append(helper.make_node("Conv", [x, w, b], [c], name=c, kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        g.node.append(helper.make_node("Relu", [c], [r], name=r))
        x = r
    g.output.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, CHANNELS, HW, HW]))
    return _model(g)


def _external(name: str, dims: list[int], location: str, offset: int) -> tuple[TensorProto, int]:
    length = math.prod(dims) * 4
    t = TensorProto()
    t.name = name
    t.data_type = TensorProto.FLOAT
    t.dims.extend(dims)
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = t.external_data.add()
        entry.key = key
        entry.value = value
    return t, offset + length


def build_external(location: str) -> tuple[onnx.ModelProto, int]:
    """The model and the size its data file must have; every weight points into that file."""
    g = onnx.GraphProto()
    g.name = EXTERNAL_NAME
    g.input.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CONV_CH, 16, 16]))
    offset = 0

    def add(name: str, dims: list[int]) -> str:
        nonlocal offset
        t, end = _external(name, dims, location, offset)
        g.initializer.append(t)
        offset = (end + ALIGN - 1) // ALIGN * ALIGN
        return name

    w, b = add("conv_w", [CONV_CH, CONV_CH, 3, 3]), add("conv_b", [CONV_CH])
    g.node.append(helper.make_node("Conv", ["x", w, b], ["conv"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    g.node.append(helper.make_node("Relu", ["conv"], ["conv_relu"], name="conv_relu"))
    g.node.append(helper.make_node("Flatten", ["conv_relu"], ["flat"], name="flat", axis=1))
    x = "flat"
    for i in range(GEMM_LAYERS):
        w = add(f"fc{i}_w", [GEMM_DIM, GEMM_DIM])
        b = add(f"fc{i}_b", [GEMM_DIM])
        g.node.append(helper.make_node("Gemm", [x, w, b], [f"fc{i}"], name=f"fc{i}", transB=1))
        x = f"fc{i}"
        if i < GEMM_LAYERS - 1:
            g.node.append(helper.make_node("Relu", [x], [f"fc{i}_relu"], name=f"fc{i}_relu"))
            x = f"fc{i}_relu"
    g.output.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, GEMM_DIM]))
    return _model(g), offset


def write_chain(pairs: int, force: bool) -> Path:
    path = chain_path(pairs)
    if path.exists() and not force:
        return path
    model = build_chain(pairs)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(model.SerializeToString())
    os.replace(tmp, path)
    return path


def write_external(force: bool) -> Path:
    path = external_path()
    data_name = f"{EXTERNAL_NAME}.bin"
    data_path = WORK / data_name
    model, size = build_external(data_name)
    if path.exists() and data_path.exists() and data_path.stat().st_size == size and not force:
        return path
    free = shutil.disk_usage(WORK).free
    if free < 2 * 2**30:  # sparse, but leave room in case the filesystem does not support holes
        sys.exit(f"make_models: only {free / 2**30:.1f} GiB free under {WORK}; need a few GiB")
    with open(data_path, "wb") as f:
        f.truncate(size)  # a sparse file of zeros: no RAM, (almost) no disk
    path.write_bytes(model.SerializeToString())
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="rewrite models that already exist")
    ap.add_argument("--pairs", type=int, nargs="*", default=list(CHAIN_PAIRS), help="chain sizes (Conv+Relu pairs)")
    ap.add_argument("--no-external", action="store_true", help="skip the 3 GiB external-data model")
    args = ap.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    for pairs in args.pairs:
        p = write_chain(pairs, args.force)
        print(f"{p.relative_to(WORK.parent.parent)}: {2 * pairs:,} nodes, {p.stat().st_size / 2**20:.1f} MiB")
    if not args.no_external:
        p = write_external(args.force)
        data = p.with_suffix(".bin")
        print(
            f"{p.relative_to(WORK.parent.parent)}: {p.stat().st_size:,} bytes + "
            f"{data.name} {data.stat().st_size / 2**30:.2f} GiB external data (sparse)"
        )


if __name__ == "__main__":
    main()
