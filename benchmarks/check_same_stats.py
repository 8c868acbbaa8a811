"""Check that performance work left `cnn stats` results unchanged: the rows and totals of
``compute_stats`` (and the ``--by op`` rows) of the working tree against those of a git revision.

    python benchmarks/check_same_stats.py [--rev HEAD] [MODEL ...]

Default models: the sample model, the onnx package's light_*.onnx, every .onnx under tests/ and
sample_models/, and the benchmark chain and external-data models that exist. The revision's
cnncli is unpacked into a temporary folder and run in a child process.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DUMP = r"""
import json, sys
import cnncli
from cnncli.frontend.graph import analyse
from cnncli.frontend.load import load_model
from cnncli.render import to_json_value
from cnncli.costs.stats import by_op, compute_stats
out = {"cnncli": cnncli.__file__}
for path in sys.argv[1:]:
    try:
        loaded = load_model(path)
        result = compute_stats(analyse(loaded.model))
        out[path] = to_json_value({"layers": result.layers, "ops": by_op(result.layers), "totals": result.totals,
                                   "unknown": result.unknown_ops})
    except Exception as exc:
        out[path] = {"error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(out))
"""


def dump(pythonpath: str | None, models: list[str]) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", DUMP, *models], env=env, capture_output=True, text=True, check=True,
                          cwd=tempfile.gettempdir())
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", default="HEAD", help="git revision to compare with (default HEAD)")
    ap.add_argument("models", nargs="*")
    args = ap.parse_args(argv)
    import onnx

    models = args.models or sorted({
        str(ROOT / "sample_models" / "zfnet_paper.onnx"),
        *glob.glob(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/light_*.onnx")),
        *glob.glob(str(ROOT / "tests" / "**" / "*.onnx"), recursive=True),
        *glob.glob(str(ROOT / "sample_models" / "*.onnx")),
        *[str(p) for p in (ROOT / "benchmarks" / "_work").glob("chain_4000.onnx")],
        *[str(p) for p in (ROOT / "benchmarks" / "_work").glob("external_3g.onnx")],
    })
    extra = tempfile.TemporaryDirectory()
    if not args.models and (ROOT / "tests" / "reverse_models.py").exists():
        # the small op-coverage models of the reverse-pass tests: Pad, PRelu, Split, pools, ...
        sys.path.insert(0, str(ROOT / "tests"))
        try:
            import reverse_models

            for name, build in reverse_models.CASES.items():
                path = Path(extra.name) / f"{name}.onnx"
                path.write_bytes(build().model.SerializeToString())
                models.append(str(path))
        except Exception as exc:  # the tests' helpers are not ours: use them when they work
            print(f"(skipping tests/reverse_models.py: {type(exc).__name__}: {exc})")
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.rev, "cnncli"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        before = dump(tmp, models)
    after = dump(None, models)
    assert before.pop("cnncli").startswith(tmp), "the revision's cnncli was not the one imported"
    print(f"working tree: {after.pop('cnncli')}")
    bad = 0
    for m in models:
        if before[m] != after[m]:
            bad += 1
            print(f"DIFFERENT: {m}")
            for key in ("error", "totals", "unknown"):
                if before[m].get(key) != after[m].get(key):
                    print(f"  {key}: {str(before[m].get(key))[:200]}\n  now: {str(after[m].get(key))[:200]}")
            for key in ("layers", "ops"):
                a, b = before[m].get(key) or [], after[m].get(key) or []
                for i, (x, y) in enumerate(zip(a, b)):
                    if x != y:
                        print(f"  {key}[{i}]: {x}\n  now: {y}")
                        break
                if len(a) != len(b):
                    print(f"  {key}: {len(a)} rows, now {len(b)}")
    print(f"{len(models)} models compared with {args.rev}: {bad} different")
    extra.cleanup()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
