"""Train sample_models/zfnet_mini.onnx: a small Zeiler & Fergus (2013) network on synthetic images.

Dev only: needs torch (``pip install '.[dev]'``); the test suite and ``cnn`` never import it.
Everything comes from this repository: the images are drawn by ``synthetic.py`` from a seed, the
weights start from torch's seeded initialiser, and no outside data or weights are used.

    python sample_models/train.py             # about 9 min on 2 CPU cores
    python sample_models/train.py --images    # also rewrite sample_models/images/ (needs scikit-image)

Steps: generate the training set (seed 0) and the held-out set (seed 1); train with SGD (Nesterov
momentum) on a one-cycle schedule, with flips/transposes as augmentation (every class is invariant
to them) and BatchNorm after each conv as a training aid, folded into the conv weights at export;
write the ONNX graph by hand with onnx.helper from the trained state_dict (opset 17, no
torch.onnx); check onnxruntime against torch on a batch (max abs diff < 1e-4); print the held-out
accuracy measured with torch and with onnxruntime, and the accuracy on the set that
tests/test_sample_model.py regenerates (seed 2024, 200 images). See sample_models/README.md.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import sys
import time
from collections import OrderedDict
from pathlib import Path

# Threads that spin while waiting collapse throughput (up to 10×) when other processes share the
# 2 cores; passive waiting keeps a shared machine usable. Must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import synthetic  # noqa: E402  (numpy + Pillow only)

OUT = HERE / "zfnet_mini.onnx"
SIZE = synthetic.SIZE
CLASSES = synthetic.CLASSES

# (name, out_channels, kernel, stride, pad) of each conv; pools are 3×3 stride 2.
CONVS = [
    ("conv1", 48, 7, 2, 1),
    ("conv2", 128, 5, 2, 2),
    ("conv3", 160, 3, 1, 1),
    ("conv4", 160, 3, 1, 1),
    ("conv5", 128, 3, 1, 1),
]
FC6 = 256
LRN = dict(size=5, alpha=1e-4, beta=0.75, k=1.0)
TRAIN_SEED, HELDOUT_SEED, TEST_SEED, TEST_N = 0, 1, 2024, 200


def build_torch(bn: bool = True, conv1_std: float = 0.01) -> nn.Sequential:
    def lrn():
        return nn.LocalResponseNorm(LRN["size"], LRN["alpha"], LRN["beta"], LRN["k"])

    layers: list[tuple[str, nn.Module]] = []
    cin = 3
    for i, (name, cout, k, s, p) in enumerate(CONVS, 1):
        layers.append((name, nn.Conv2d(cin, cout, k, s, p)))
        if bn:  # training aid only: folded into conv{i} at export
            layers.append((f"bn{i}", nn.BatchNorm2d(cout)))
        layers.append((f"relu{i}", nn.ReLU()))
        if i in (1, 2):
            layers += [(f"pool{i}", nn.MaxPool2d(3, 2, ceil_mode=True)), (f"norm{i}", lrn())]
        cin = cout
    layers += [("pool5", nn.MaxPool2d(3, 2)), ("flatten", nn.Flatten())]
    body = nn.Sequential(OrderedDict(layers))
    with torch.no_grad():
        flat = body(torch.zeros(1, 3, SIZE, SIZE)).shape[1]
    layers += [
        ("drop6", nn.Dropout(0.3)),
        ("fc6", nn.Linear(flat, FC6)),
        ("relu6", nn.ReLU()),
        ("drop7", nn.Dropout(0.3)),
        ("fc7", nn.Linear(FC6, len(CLASSES))),
    ]
    model = nn.Sequential(OrderedDict(layers))
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    nn.init.normal_(model.fc7.weight, std=0.01)
    # conv1 starts near zero (BN makes its scale irrelevant), so the kernels it ends with are what
    # it learned rather than the random start: edges, bars and colour blobs, good to look at.
    nn.init.normal_(model.conv1.weight, std=conv1_std)
    return model


def layer_shapes(model: nn.Sequential) -> list[tuple[str, tuple[int, ...]]]:
    out, x = [], torch.zeros(1, 3, SIZE, SIZE)
    model.eval()
    with torch.no_grad():
        for name, m in model.named_children():
            x = m(x)
            if not name.startswith(("drop", "bn")):
                out.append((name, tuple(x.shape[1:])))
    return out


# ---------------------------------------------------------------- data


def _chunk(args):
    n, seed, start = args
    return synthetic.make_set(n, seed, start)


def generate(n: int, seed: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    step = 1000
    jobs = [(min(step, n - s), seed, s) for s in range(0, n, step)]
    if workers <= 1:
        parts = [_chunk(j) for j in jobs]
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_chunk, jobs)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


MEAN = torch.tensor(synthetic.MEAN).view(1, 3, 1, 1)
STD = torch.tensor(synthetic.STD).view(1, 3, 1, 1)


def to_input(xb: torch.Tensor) -> torch.Tensor:
    """uint8 N×3×H×W → float, RGB in 0–1 normalised with the ImageNet mean/std."""
    return (xb.float() / 255.0 - MEAN) / STD


def augment(xb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal/vertical flips and transposes (the 8 symmetries of the square)."""
    n = xb.shape[0]
    m = torch.rand(3, n, generator=g) < 0.5
    xb = xb.clone()
    xb[m[0]] = xb[m[0]].flip(3)
    xb[m[1]] = xb[m[1]].flip(2)
    xb[m[2]] = xb[m[2]].transpose(2, 3)
    return xb


@torch.no_grad()
def accuracy_torch(model, x: torch.Tensor, y: torch.Tensor, batch: int = 250) -> float:
    model.eval()
    hits = 0
    for i in range(0, len(x), batch):
        hits += (model(to_input(x[i : i + batch])).argmax(1) == y[i : i + batch]).sum().item()
    return hits / len(x)


# ---------------------------------------------------------------- ONNX


def export_onnx(model: nn.Sequential, path: Path) -> onnx.ModelProto:
    sd = {k: v.detach().cpu().numpy().astype(np.float64) for k, v in model.state_dict().items()}
    for i, (name, *_rest) in enumerate(CONVS, 1):
        if f"bn{i}.weight" in sd:  # fold eval-mode BatchNorm into the conv: exact
            bn = getattr(model, f"bn{i}")
            scale = sd[f"bn{i}.weight"] / np.sqrt(sd[f"bn{i}.running_var"] + bn.eps)
            sd[f"{name}.weight"] = sd[f"{name}.weight"] * scale[:, None, None, None]
            sd[f"{name}.bias"] = (sd[f"{name}.bias"] - sd[f"bn{i}.running_mean"]) * scale + sd[f"bn{i}.bias"]
    sd = {k: v.astype(np.float32) for k, v in sd.items()}
    nodes, inits = [], []
    x = "image"

    def init(name):
        inits.append(numpy_helper.from_array(sd[name], name))
        return name

    for i, (name, cout, k, s, p) in enumerate(CONVS, 1):
        nodes.append(
            helper.make_node(
                "Conv", [x, init(f"{name}.weight"), init(f"{name}.bias")], [name], name=name,
                kernel_shape=[k, k], strides=[s, s], pads=[p] * 4,
            )
        )
        nodes.append(helper.make_node("Relu", [name], [f"relu{i}"], name=f"relu{i}"))
        x = f"relu{i}"
        if i in (1, 2, 5):
            nodes.append(
                helper.make_node("MaxPool", [x], [f"pool{i}"], name=f"pool{i}", kernel_shape=[3, 3],
                                 strides=[2, 2], ceil_mode=int(i != 5))
            )
            x = f"pool{i}"
        if i in (1, 2):
            nodes.append(
                helper.make_node("LRN", [x], [f"norm{i}"], name=f"norm{i}", size=LRN["size"],
                                 alpha=LRN["alpha"], beta=LRN["beta"], bias=LRN["k"])
            )
            x = f"norm{i}"
    nodes.append(helper.make_node("Flatten", [x], ["flatten"], name="flatten", axis=1))
    nodes.append(helper.make_node("Gemm", ["flatten", init("fc6.weight"), init("fc6.bias")], ["fc6"],
                                  name="fc6", transB=1))
    nodes.append(helper.make_node("Relu", ["fc6"], ["relu6"], name="relu6"))
    nodes.append(helper.make_node("Gemm", ["relu6", init("fc7.weight"), init("fc7.bias")], ["logits"],
                                  name="fc7", transB=1))
    graph = helper.make_graph(
        nodes, "zfnet_mini",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(CLASSES)])],
        inits,
        doc_string="Small Zeiler & Fergus (2013) network trained on synthetic shapes and textures; "
                   "see sample_models/README.md.",
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="cnncli")
    m.ir_version = 8
    m.doc_string = graph.doc_string
    helper.set_model_props(m, {"cnncli.preprocess": "imagenet", "cnncli.labels": ",".join(CLASSES)})
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return m


def ort_logits(sess: ort.InferenceSession, x_uint8: torch.Tensor, batch: int = 250) -> np.ndarray:
    outs = [sess.run(["logits"], {"image": to_input(x_uint8[i : i + batch]).numpy()})[0]
            for i in range(0, len(x_uint8), batch)]
    return np.concatenate(outs)


# ---------------------------------------------------------------- images


def write_images(max_side: int = 320) -> None:
    """Rewrite sample_models/images/: scikit-image's public-domain photos and generated samples."""
    from PIL import Image
    from skimage import data

    d = HERE / "images"
    d.mkdir(exist_ok=True)
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera"):
        img = Image.fromarray(getattr(data, name)())
        img = img.convert("RGB")
        img.thumbnail((max_side, max_side), Image.LANCZOS)
        img.save(d / f"{name}.jpg", quality=90)
    for label, index in ((0, 0), (3, 3), (5, 5), (6, 6), (8, 8), (9, 9)):
        arr, lab = synthetic.make_image(index, seed=TEST_SEED + 1)
        assert lab == label
        Image.fromarray(arr).save(d / f"{CLASSES[label]}.png")
    print(f"wrote {sorted(p.name for p in d.iterdir())}")


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=40000, help="training images (seed 0)")
    ap.add_argument("--heldout", type=int, default=2000, help="held-out images (seed 1)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05, help="peak learning rate of the one-cycle schedule")
    ap.add_argument("--wd", type=float, default=5e-4, help="weight decay")
    ap.add_argument("--opt", choices=("sgd", "adamw"), default="sgd",
                    help="SGD (Nesterov momentum 0.9) gives smoother conv1 kernels than AdamW")
    ap.add_argument("--conv1-std", type=float, default=0.01, help="std of conv1's initial weights")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="torch seed (init, shuffling, augmentation)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--no-bn", dest="bn", action="store_false",
                    help="train without BatchNorm (by default BN follows each conv and is folded at export)")
    ap.add_argument("--images", action="store_true", help="also rewrite sample_models/images/")
    args = ap.parse_args()

    t0 = time.time()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormals slow CPU training by up to 10×
    torch.manual_seed(args.seed)

    xtr, ytr = generate(args.train, TRAIN_SEED, args.threads)
    xho, yho = generate(args.heldout, HELDOUT_SEED, args.threads)
    xte, yte = synthetic.make_set(TEST_N, TEST_SEED)
    print(f"[{time.time() - t0:6.1f}s] generated {len(xtr)} training (seed {TRAIN_SEED}), "
          f"{len(xho)} held-out (seed {HELDOUT_SEED}) and {len(xte)} test (seed {TEST_SEED}) images",
          flush=True)
    to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    xtr, xho, xte = to_t(xtr), to_t(xho), to_t(xte)
    ytr, yho, yte = torch.from_numpy(ytr), torch.from_numpy(yho), torch.from_numpy(yte)

    model = build_torch(args.bn, args.conv1_std)
    for name, shape in layer_shapes(model):
        print(f"  {name:8s} {'×'.join(map(str, shape))}")
    print(f"  params   {sum(p.numel() for p in model.parameters()):,}", flush=True)

    steps_per_epoch = math.ceil(len(xtr) / args.batch)
    if args.opt == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wd)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                              weight_decay=args.wd)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch,
                                                pct_start=0.15)
    g = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        loss_sum, hits, seen = 0.0, 0, 0
        for step in range(steps_per_epoch):
            idx = perm[step * args.batch : (step + 1) * args.batch]
            xb, yb = to_input(augment(xtr[idx], g)), ytr[idx]
            out = model(xb)
            loss = F.cross_entropy(out, yb, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(yb)
            hits += (out.argmax(1) == yb).sum().item()
            seen += len(yb)
            if step % 100 == 0:
                print(f"[{time.time() - t0:6.1f}s] epoch {epoch + 1} step {step}/{steps_per_epoch} "
                      f"loss {loss_sum / seen:.3f} acc {hits / seen:.3f}", flush=True)
        acc = accuracy_torch(model, xho, yho)
        print(f"[{time.time() - t0:6.1f}s] epoch {epoch + 1}: train loss {loss_sum / seen:.3f} "
              f"acc {hits / seen:.3f}; held-out acc (torch) {acc:.4f}", flush=True)

    model.eval()
    acc_torch = accuracy_torch(model, xho, yho)
    export_onnx(model, args.out)
    size = args.out.stat().st_size
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(str(args.out), so, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = model(to_input(xho[:64])).numpy()
    got = ort_logits(sess, xho[:64])
    diff = float(np.abs(ref - got).max())
    assert diff < 1e-4, f"onnxruntime differs from torch by {diff}"
    pred = ort_logits(sess, xho).argmax(1)
    acc_ort = float((pred == yho.numpy()).mean())
    acc_test = float((ort_logits(sess, xte).argmax(1) == yte.numpy()).mean())
    per_class = {c: float((pred[yho.numpy() == i] == i).mean()) for i, c in enumerate(CLASSES)}
    print(f"wrote {args.out} ({size:,} bytes)")
    print(f"onnxruntime vs torch: max abs diff {diff:.2e} on 64 held-out images")
    print(f"held-out accuracy ({len(xho)} images, seed {HELDOUT_SEED}): torch {acc_torch:.4f}, "
          f"onnxruntime {acc_ort:.4f}")
    print(f"test-set accuracy ({TEST_N} images, seed {TEST_SEED}), onnxruntime: {acc_test:.4f}")
    print("per-class held-out accuracy: " + ", ".join(f"{c} {a:.3f}" for c, a in per_class.items()))
    if args.images:
        write_images()
    print(f"total wall time {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
