"""Check that the fast JSON and piped-table writers in cnncli/render print what the plain
``json.dump(..., indent=2)`` (the same document once parsed) and the rich table (byte for
byte) print.

For every model given (default: the sample model, the onnx package's light model-zoo models
and the benchmark chains that exist) and for --by layer and --by op, the document that
``cnn stats`` renders is written both ways and compared; then the same for
hand-made documents with awkward text (markup, emoji codes, spaces, non-ASCII, wide tables,
no rows, no totals). Where rich would print the text as it is, the table must match rich byte
for byte; where rich would not (markup, emoji codes, control characters, a table wider than
400 columns that rich folds), the table must show every name verbatim, one line per row.

    python benchmarks/check_output.py [MODEL ...]
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import sys
from pathlib import Path

from cnncli.frontend.graph import analyse
from cnncli.frontend.load import load_model
from cnncli.render import Document, cells, columns, render, to_json_value
from cnncli.render.document import _cell, headers as _headers, numeric as _numeric, summary_lines as _summary_lines
from cnncli.render.text import visible
from cnncli.costs.stats import LayerRow, OpRow, by_op, compute_stats

ROOT = Path(__file__).resolve().parent.parent


class Pipe(io.StringIO):
    """A non-terminal text stream with an encoding, as sys.stdout is when redirected."""

    encoding = "utf-8"

    def isatty(self) -> bool:
        return False


def reference_cells(row, human: bool) -> list[str]:
    """cells() as it was: every value through _cell."""
    out = []
    for f in columns(type(row)):
        value = getattr(row, f.name)
        kind = f.metadata.get("kind", "text")
        if value is None and f.metadata.get("unknown"):
            kind = "unknown"
        out.append(_cell(value, kind, human))
    return out


def reference_json(doc: Document) -> str:
    payload = {**to_json_value(doc.meta), doc.rows_key: [to_json_value(r) for r in doc.rows]}
    if doc.totals is not None:
        payload["totals"] = to_json_value(doc.totals)
    return json.dumps(payload, indent=2) + "\n"


def reference_table(doc: Document) -> str:
    """The table as cnncli rendered it before the fast path: rich, always."""
    from rich.console import Console
    from rich.table import Table

    stream = Pipe()
    console = Console(file=stream, width=400, highlight=False, soft_wrap=True)
    table = Table(title=doc.title, show_lines=False, header_style="bold")
    for head, num in zip(_headers(doc.row_type), _numeric(doc.row_type)):
        table.add_column(head, justify="right" if num else "left", overflow="fold")
    for r in doc.rows:
        table.add_row(*reference_cells(r, human=True))
    console.print(table)
    if doc.totals:
        summary = Table(show_header=False, box=None, pad_edge=False)
        summary.add_column(style="bold")
        summary.add_column(justify="right")
        for k, v in _summary_lines(doc.totals):
            summary.add_row(k, v)
        console.print(summary)
    return stream.getvalue()


def rendered(doc: Document, fmt: str) -> str:
    stream = Pipe()
    render(doc, fmt, stream)
    return stream.getvalue()


def compare(label: str, doc: Document) -> int:
    bad = 0
    for human in (True, False):
        for r in doc.rows:
            if cells(r, human) != reference_cells(r, human):
                bad += 1
                print(f"MISMATCH {label} cells(human={human}): {cells(r, human)} != {reference_cells(r, human)}")
                break
    got, want = rendered(doc, "json"), reference_json(doc)
    if json.loads(got) != json.loads(want):  # the same document; the layout differs (a row a line)
        bad += 1
        print(f"MISMATCH {label} json: parsed documents differ")
    for fmt, ref in (("table", reference_table),):
        got, want = rendered(doc, fmt), ref(doc)
        if not rich_prints_as_is(doc, got):
            lines = got.splitlines()
            body = [line for line in lines if line.startswith("│")]
            names = [visible(cells(r, True)[0]) for r in doc.rows]  # the first column
            if len(body) != len(doc.rows) or any(n not in line for n, line in zip(names, body)):
                bad += 1
                print(f"MISMATCH {label} {fmt}: not every row verbatim on its own line")
            continue
        if got != want:
            bad += 1
            a, b = got.splitlines(), want.splitlines()
            diff = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            print(f"MISMATCH {label} {fmt}: line {diff + 1}\n  got:  {a[diff:diff + 1]}\n  want: {b[diff:diff + 1]}")
    return bad


# Text that rich prints as it is: printable ASCII, no markup ('['), no ':emoji:' code, no leading,
# trailing or doubled space in a cell (rich may strip those); \x00 separates the cells.
_RICH_UNSAFE = re.compile(r"[^\x00 -~]|\[|:[^\s\x00]*?:|\x00 | \x00|  |^ | $")


def rich_prints_as_is(doc: Document, table_text: str) -> bool:
    texts = [_headers(doc.row_type), *(cells(r, True) for r in doc.rows)]
    if doc.totals:
        texts += [[k, v] for k, v in _summary_lines(doc.totals)]
    if doc.title and (_RICH_UNSAFE.search(doc.title) or len(doc.title) > 400):
        return False
    if any(_RICH_UNSAFE.search("\x00".join(t)) for t in texts):
        return False
    return all(len(line) <= 400 for line in table_text.splitlines())  # wider: rich folded the cells


def model_docs(path: str):
    loaded = load_model(path)
    graph = analyse(loaded.model)
    result = compute_stats(graph)
    meta = {"model": path, "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in graph.inputs]}
    title = f"{path}  (" + ", ".join(s.name + " " + "x".join(map(str, s.shape)) for s in graph.inputs) + ")"
    yield "layer", Document(rows=result.layers, row_type=LayerRow, rows_key="layers", meta=meta, totals=result.totals, title=title)
    yield "op", Document(rows=by_op(result.layers), row_type=OpRow, rows_key="ops", meta=meta, totals=result.totals, title=title)


def awkward_docs():
    base = dict(index=1, op="Conv", input_shape=[1, 3, 8, 8], output_shape=[1, 4, 8, 8], kernel=[3, 3], stride=[1, 1],
                pads=[1, 1, 1, 1], dilation=[1, 1], groups=1, macs=1000, flops_other=None, params=108, buffers=0,
                cpr=1.5, act_bytes=1024, rf=[3, 3], rf_stride=[1, 1])
    names = ["plain", "with space", "two  spaces", " lead", "trail ", "[bold]x", "a[1]", ":smile:", "a:b:c", "conv2d/Conv:0",
             "ünï", "宽", "tab\there", "new\nline", "", "x" * 390, "x" * 150]
    for name in names:
        rows = [LayerRow(name=name, **base), LayerRow(name="other", **{**base, "index": None, "cpr": 2})]
        totals = {"macs": 5, "largest_activation": {"name": name, "bytes": 3}, "unknown_ops": []}
        for title in (None, "", "t  (x 1x3)", f"title {name}", "[red]t", "C:\\m.onnx", "x" * 450):
            for t in (totals, None, {}):
                yield f"name={name!r} title={title!r} totals={t!r}", Document(rows=rows, row_type=LayerRow, totals=t, title=title)
    yield "no rows", Document(rows=[], row_type=LayerRow, totals={"macs": 0}, title="empty")
    yield "no rows no totals", Document(rows=[], row_type=OpRow, title=None)


def main(argv: list[str]) -> int:
    models = argv or [
        str(ROOT / "sample_models" / "zfnet_paper.onnx"),
        *sorted(glob.glob(os.path.join(os.path.dirname(__import__("onnx").__file__), "backend/test/data/light/light_*.onnx"))),
        *[str(p) for p in sorted((ROOT / "benchmarks" / "_work").glob("chain_4000.onnx"))],
    ]
    bad = checked = 0
    for path in models:
        for by, doc in model_docs(path):
            bad += compare(f"{Path(path).name} --by {by}", doc)
            checked += 1
    for label, doc in awkward_docs():
        bad += compare(label, doc)
        checked += 1
    print(f"{checked} documents checked (json and table each): {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
