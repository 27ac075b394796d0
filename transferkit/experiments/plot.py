"""The transfer experiment's picture: test accuracy vs training images per class.

One line per method with its bootstrap interval, the plan's choice at each size ringed,
and the plan's thresholds (`plan.FEATURE_EXTRACT_BELOW`, `plan.FINE_TUNE_FRACTIONS`)
drawn where they fall: the measured evidence for (or against) the rule.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from transferkit.fileio import atomic_path, subplots

COLORS = {"scratch": "tab:grey", "frozen": "tab:blue", "fine-tune": "tab:orange"}


def plot_transfer(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Writes the accuracy curves of `table` (`transfer.csv`'s columns) as a PNG.

    Args:
        table: One row per (fraction, method).
        path: The PNG to write.
        title: The plot's title.

    Returns:
        `path`.
    """
    from transferkit.plan import FEATURE_EXTRACT_BELOW, FINE_TUNE_FRACTIONS

    fig, ax = subplots(figsize=(7, 4.2))
    for method, rows in table.groupby("method", sort=False):
        rows = rows.sort_values("images_per_class")
        x, y = rows["images_per_class"], rows["accuracy"]
        ax.errorbar(x, y, yerr=[y - rows["ci_low"], rows["ci_high"] - y], fmt="o-",
                    ms=4, capsize=3, color=COLORS.get(method), label=method)
        chosen = rows[rows["plan_choice"].astype(bool)]
        ax.plot(chosen["images_per_class"], chosen["accuracy"], "o", ms=11, mfc="none",
                mec="black", lw=0)
    thresholds = sorted({FEATURE_EXTRACT_BELOW, *(least for least, _ in FINE_TUNE_FRACTIONS)})
    fraction = {least: f for least, f in FINE_TUNE_FRACTIONS}
    for least in thresholds:
        ax.axvline(least, color="red", ls="--", alpha=0.5)
        ax.text(least, 0.02, f" fine-tune {fraction.get(least, 0):.0%}\n from {least}",
                color="red", fontsize=7, transform=ax.get_xaxis_transform())
    ax.plot([], [], "o", ms=11, mfc="none", mec="black", label="the plan's choice")
    ax.set_xscale("log")
    ticks = sorted(set(int(v) for v in table["images_per_class"]))
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("training images in the smallest class (log scale)")
    ax.set_ylabel("test accuracy (95% bootstrap interval)")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path
