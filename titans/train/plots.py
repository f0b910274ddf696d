"""Loss curves from run logs (``log.csv``): one run, or several on shared axes. Needs matplotlib (else skipped)."""

from __future__ import annotations

import csv
import os

from ..pyplot import pyplot


def plot_runs(logs: dict[str, str], png_path: str, title: str = "", *, panels: bool = False) -> str | None:
    """Bits per byte against training tokens for each ``{label: log.csv}``; train as lines, validation as dots.

    ``panels=True`` draws train and validation side by side (for many runs). Returns the PNG path, or None when
    matplotlib is not installed.
    """
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 2 if panels else 1, figsize=(11 if panels else 6.5, 4), squeeze=False)
    axes = axes[0]
    for label, path in logs.items():
        if not os.path.exists(path):
            continue
        with open(path) as f:
            rows = list(csv.DictReader(f))
        for i, (split, style) in enumerate((("train", "-"), ("val", "o--"))):
            pts = [(int(r["tokens"]), float(r["bpb"])) for r in rows if r["split"] == split]
            if pts:
                ax = axes[i] if panels else axes[0]
                ax.plot(*zip(*pts), style, label=label if panels else f"{label} {split}".strip(), ms=3, alpha=0.85)
    for i, ax in enumerate(axes):
        ax.set_xlabel("training tokens")
        ax.set_ylabel("bits per byte")
        ax.set_title((f"{('train', 'validation')[i]}: " if panels else "") + title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return png_path
