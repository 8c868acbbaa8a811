"""The ZF-style network the benchmarks build (Zeiler & Fergus 2013, Fig. 3, without LRN), up to
conv5's ReLU, shared by bench_project.py (ONNX) and torch_nets.py (torch): one module below both,
so neither imports the other."""

# name, out channels, kernel, stride, pad, a 3x3/2 ceil max-pool after the ReLU
ZF_LAYERS = [
    ("conv1", 96, 7, 2, 1, True),
    ("conv2", 256, 5, 2, 0, True),
    ("conv3", 384, 3, 1, 1, False),
    ("conv4", 384, 3, 1, 1, False),
    ("conv5", 256, 3, 1, 1, False),
]
