"""Write sample_models/zfnet_paper.onnx: the exact architecture of Zeiler & Fergus (2013), Fig. 3.

224×224×3 → conv1 96×7×7/2 pad 1 (110) → ReLU → max-pool 3×3/2 ceil (55) → LRN
→ conv2 256×5×5/2 (26) → ReLU → max-pool 3×3/2 ceil (13) → LRN
→ conv3 384×3×3 pad 1 → ReLU → conv4 384×3×3 pad 1 → ReLU → conv5 256×3×3 pad 1 → ReLU
→ max-pool 3×3/2 (6×6×256) → FC 4096 → ReLU → FC 4096 → ReLU → FC 1000 → Softmax.

The weights are ConstantOfShape nodes (one small constant each), so the file stays a few KB
while every shape, and so every cost, is that of the real network. Run:
    python sample_models/make_zfnet_paper.py
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).with_name("zfnet_paper.onnx")


def build() -> onnx.ModelProto:
    nodes, inits = [], []

    def weight(name: str, shape: list[int], value: float) -> str:
        inits.append(numpy_helper.from_array(np.array(shape, dtype=np.int64), f"{name}_shape"))
        nodes.append(
            helper.make_node(
                "ConstantOfShape", [f"{name}_shape"], [name],
                value=helper.make_tensor("v", TensorProto.FLOAT, [1], [value]),
                name=f"{name}_const",
            )
        )
        return name

    x = "image"

    def conv(name, cin, cout, k, stride, pad):
        nonlocal x
        w = weight(f"{name}_w", [cout, cin, k, k], 0.01)
        b = weight(f"{name}_b", [cout], 0.0)
        nodes.append(helper.make_node("Conv", [x, w, b], [name], name=name, kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[pad] * 4))
        nodes.append(helper.make_node("Relu", [name], [f"{name}_relu"], name=f"{name}_relu"))
        x = f"{name}_relu"

    def pool(name, ceil):
        nonlocal x
        nodes.append(helper.make_node("MaxPool", [x], [name], name=name, kernel_shape=[3, 3],
                                      strides=[2, 2], ceil_mode=int(ceil)))
        x = name

    def lrn(name):
        nonlocal x
        nodes.append(helper.make_node("LRN", [x], [name], name=name, size=5, alpha=1e-4, beta=0.75, bias=1.0))
        x = name

    def fc(name, cin, cout, relu=True):
        nonlocal x
        w = weight(f"{name}_w", [cout, cin], 0.001)
        b = weight(f"{name}_b", [cout], 0.0)
        nodes.append(helper.make_node("Gemm", [x, w, b], [name], name=name, transB=1))
        x = name
        if relu:
            nodes.append(helper.make_node("Relu", [name], [f"{name}_relu"], name=f"{name}_relu"))
            x = f"{name}_relu"

    conv("conv1", 3, 96, 7, 2, 1)
    pool("pool1", ceil=True)
    lrn("norm1")
    conv("conv2", 96, 256, 5, 2, 0)
    pool("pool2", ceil=True)
    lrn("norm2")
    conv("conv3", 256, 384, 3, 1, 1)
    conv("conv4", 384, 384, 3, 1, 1)
    conv("conv5", 384, 256, 3, 1, 1)
    pool("pool5", ceil=False)
    nodes.append(helper.make_node("Flatten", [x], ["flat"], name="flatten", axis=1))
    x = "flat"
    fc("fc6", 9216, 4096)
    fc("fc7", 4096, 4096)
    fc("fc8", 4096, 1000, relu=False)
    nodes.append(helper.make_node("Softmax", [x], ["prob"], name="prob", axis=1))
    graph = helper.make_graph(
        nodes, "zfnet_paper",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1000])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="cnncli")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    onnx.save(build(), OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")
