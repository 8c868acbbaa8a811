"""Per-layer cost plot (matplotlib through Figure(), never pyplot)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

from cnncli.atomic import atomic_path, can_write_folder, run_folder


def _writable_matplotlib_dirs() -> None:
    """Before matplotlib's first import: where its config or cache folder cannot be written (a
    read-only HOME, a HOME that is not a folder, a bad MPLCONFIGDIR), a temporary MPLCONFIGDIR
    for this run, removed when it ends. Otherwise matplotlib prints two lines ("Matplotlib created
    a temporary cache directory …") and leaves its /tmp/matplotlib-* folder behind (the CLI leaves
    by ``os._exit``, which skips matplotlib's atexit clean-up)."""
    if "matplotlib" in sys.modules:
        return
    folders = _matplotlib_dirs()
    if folders and all(can_write_folder(f) for f in folders):
        return
    os.environ["MPLCONFIGDIR"] = run_folder("cnncli-matplotlib-")


def _matplotlib_dirs() -> list[Path]:
    """matplotlib's config and cache folders as it picks them (none where HOME is unknown)."""
    if os.environ.get("MPLCONFIGDIR"):
        return [Path(os.environ["MPLCONFIGDIR"])]
    try:
        home = Path.home()
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        return []
    if not sys.platform.startswith(("linux", "freebsd")):
        return [home / ".matplotlib"]
    return [Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config", "matplotlib"),
            Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache", "matplotlib")]


def stats_figure(rows: Sequence, title: str = ""):
    """Bars of MACs and params per layer on a log scale, CPR in a panel beside them. Layer names
    and the title are drawn as they are: control and bidi characters as escapes
    (``cnncli.escaping.visible``), ``$`` not read as mathtext."""
    _writable_matplotlib_dirs()
    from matplotlib.figure import Figure

    from cnncli.escaping import visible

    rows = [r for r in rows if (r.macs or 0) > 0 or (r.params or 0) > 0]
    n = max(len(rows), 1)
    height = min(max(3.0, 0.22 * n + 1.5), 60.0)
    fig = Figure(figsize=(12, height), layout="constrained")
    ax_cost, ax_cpr = fig.subplots(1, 2, sharey=True, width_ratios=[2, 1])
    labels = [visible(f"{r.index}: {r.name}" if r.index else r.name) for r in rows]
    ys = list(range(len(rows)))
    macs = [r.macs or 0 for r in rows]
    params = [r.params or 0 for r in rows]
    ax_cost.barh([y - 0.2 for y in ys], macs, height=0.4, label="MACs", color="#1f77b4")
    ax_cost.barh([y + 0.2 for y in ys], params, height=0.4, label="params", color="#ff7f0e")
    ax_cost.set_xscale("log")
    ax_cost.set_yticks(ys, labels, fontsize=7, parse_math=False)
    ax_cost.invert_yaxis()
    ax_cost.legend(loc="lower right")
    ax_cost.set_xlabel("count (log scale)")
    ax_cost.set_title("MACs and parameters per layer")
    cprs = [float(r.cpr) if r.cpr else 0.0 for r in rows]
    ax_cpr.barh(ys, cprs, height=0.6, color="#2ca02c")
    if any(cprs):
        ax_cpr.set_xscale("log")
    ax_cpr.set_xlabel("CPR = MACs / weights (log scale)")
    ax_cpr.set_title("CPR (conv: output H×W)")
    if title:
        fig.suptitle(visible(title), parse_math=False)
    return fig


def save_png(fig, path: Path | str, dpi: int = 100) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)
