"""The report's plots (matplotlib), also drawn by the demo's Model tab: one plotting code."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from transferkit.fileio import subplots

SPLIT_COLOURS = {"train": "#4c72b0", "val": "#dd8452", "test": "#55a868"}


def training_curves(history: pd.DataFrame) -> Figure:
    """Loss and accuracy per epoch, training and validation, both phases in one line.

    Args:
        history: `history.csv` (phase, epoch, loss, accuracy, val_loss, val_accuracy).

    Returns:
        A figure with two panels; a dotted line where fine-tuning (phase 2) starts.
    """
    fig, axes = subplots(1, 2, figsize=(9, 3.4), dpi=100)
    x = np.arange(1, len(history) + 1)
    phases = history["phase"].to_numpy() if "phase" in history else np.ones(len(x))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for column, label, style in ((metric, "train", "-"), (f"val_{metric}", "val", "--")):
            if column in history:
                ax.plot(x, pd.to_numeric(history[column], errors="coerce"), style,
                        label=label, color=SPLIT_COLOURS[label])
        if (phases == 2).any():
            ax.axvline(int(np.argmax(phases == 2)) + 0.5, color="grey", linestyle=":",
                       label="fine-tuning starts")
        ax.set_xlabel("epoch (phase 1: head; phase 2: fine-tuning)")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def class_balance(splits: pd.DataFrame) -> Figure:
    """Images per class, stacked by split.

    Args:
        splits: `splits.csv` (path, class, split).
    """
    table = splits.pivot_table(index="class", columns="split", aggfunc="size",
                               fill_value=0)
    fig, ax = subplots(figsize=(max(4.0, 0.7 * len(table) + 2), 3.2), dpi=100)
    bottom = np.zeros(len(table))
    for split, colour in SPLIT_COLOURS.items():
        if split in table:
            ax.bar(table.index, table[split], bottom=bottom, label=split, color=colour)
            bottom += table[split].to_numpy()
    ax.set_ylabel("images")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    ax.set_title("Class balance")
    fig.tight_layout()
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
