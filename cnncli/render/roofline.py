"""`cnn profile --plot`: the roofline (achieved GMAC/s against MACs per byte, one dot per layer,
the machine's two ceilings drawn) beside a bar chart of each layer's share of the time against its
share of the MACs. matplotlib through Figure(), never pyplot; written by render.plot.save_png."""

from __future__ import annotations

from typing import Sequence

from cnncli.render.plot import _writable_matplotlib_dirs

_MARKERS = ("o", "s", "^", "D")


def roofline_figure(rows: Sequence, peaks: dict[str, dict[str, float]], title: str = ""):
    """``rows``: ProfileRows (any providers); ``peaks``: provider -> {gmacs_per_s, gbytes_per_s}."""
    _writable_matplotlib_dirs()
    from matplotlib.figure import Figure

    from cnncli.escaping import visible

    timed = [r for r in rows if r.ms]
    bars = [r for r in timed if r.provider == next(iter(peaks), None)]
    height = min(max(5.0, 0.16 * len(bars) + 1.5), 60.0)
    fig = Figure(figsize=(14, height), layout="constrained")
    ax_roof, ax_bars = fig.subplots(1, 2, width_ratios=[3, 2])
    ops = list(dict.fromkeys(r.op for r in timed))
    colours = {op: f"C{i % 10}" for i, op in enumerate(ops)}
    lows, highs = [], []
    for k, (provider, peak) in enumerate(peaks.items()):
        dots = [r for r in timed if r.provider == provider and r.gmacs_per_s and r.intensity]
        for op in ops:
            mine = [r for r in dots if r.op == op]
            if mine:
                ax_roof.scatter([r.intensity for r in mine], [r.gmacs_per_s for r in mine], s=22, color=colours[op],
                                marker=_MARKERS[k % len(_MARKERS)], label=visible(f"{op} ({provider})"), alpha=0.8)
        lows += [r.intensity for r in dots]
        highs += [r.intensity for r in dots]
        ridge = peak["gmacs_per_s"] / peak["gbytes_per_s"]
        lo = min([ridge / 100, *lows]) / 2
        hi = max([ridge * 100, *highs]) * 2
        xs = [lo, ridge, hi]
        ax_roof.plot(xs, [lo * peak["gbytes_per_s"], peak["gmacs_per_s"], peak["gmacs_per_s"]], color="black",
                     linestyle="-" if k == 0 else "--", linewidth=1.2,
                     label=f"{provider}: {peak['gmacs_per_s']:,.1f} GMAC/s, {peak['gbytes_per_s']:,.1f} GB/s")
    ax_roof.set_xscale("log")
    ax_roof.set_yscale("log")
    ax_roof.set_xlabel("arithmetic intensity (MACs per byte moved)")
    ax_roof.set_ylabel("achieved GMAC/s")
    ax_roof.set_title("roofline: each layer against the measured ceilings")
    ax_roof.legend(fontsize=7, loc="lower right")
    ax_roof.grid(True, which="major", alpha=0.3)

    total_ms = sum(r.ms for r in bars) or 1.0
    total_macs = sum(r.macs or 0 for r in bars) or 1
    ys = list(range(len(bars)))
    ax_bars.barh([y - 0.2 for y in ys], [100 * r.ms / total_ms for r in bars], height=0.4, label="% of time", color="#d62728")
    ax_bars.barh([y + 0.2 for y in ys], [100 * (r.macs or 0) / total_macs for r in bars], height=0.4, label="% of MACs",
                 color="#1f77b4")
    labels = [visible(f"{r.index}: {r.name}" if r.index else r.name) for r in bars]
    ax_bars.set_yticks(ys, labels, fontsize=6, parse_math=False)
    ax_bars.invert_yaxis()
    ax_bars.set_xlabel("percent of the model")
    ax_bars.set_title("time against MACs per layer")
    ax_bars.legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(visible(title), parse_math=False)
    return fig
