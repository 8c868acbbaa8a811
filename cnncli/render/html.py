"""HTML tables of row documents, for notebooks (``_repr_html_``) and the demo's gallery page.
Every text is escaped: a node named ``<b>`` shows as is."""

from __future__ import annotations

import html
from typing import Sequence

from cnncli.columns import column_names, compact_names, headers
from cnncli.render.document import Document, cells, summary_lines


def table_html(rows: Sequence, row_type: type, names: Sequence[str] | None = None,
               heads: Sequence[str] | None = None) -> str:
    """A table of ``rows`` with the columns ``names`` (all by default) under ``heads``."""
    all_names = column_names(row_type)
    names = list(names) if names is not None else all_names
    pick = [all_names.index(c) for c in names]
    heads = list(heads) if heads is not None else [headers(row_type)[i] for i in pick]
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in heads) + "</tr></thead><tbody>"]
    for r in rows:
        cs = cells(r, human=True)
        out.append("<tr>" + "".join(f"<td>{html.escape(cs[i])}</td>" for i in pick) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def document_html(doc: Document) -> str:
    """The title, the compact columns of the rows and the totals."""
    parts = [f"<p><b>{html.escape(doc.title)}</b></p>"] if doc.title else []
    parts.append(table_html(doc.rows, doc.row_type, compact_names(doc.row_type)))
    if doc.totals:
        parts.append("<p>" + ", ".join(f"{html.escape(k)}: {html.escape(v)}" for k, v in summary_lines(doc.totals))
                     + "</p>")
    return "\n".join(parts)
