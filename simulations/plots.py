"""Charts of training runs as PNG files, drawn with matplotlib (its Agg backend, no display).

:func:`accuracy_chart` draws accuracy per round for one or more runs (the federated simulation
beside its centralized baseline); :func:`training_chart` draws what ``p2pnode demo`` shows: test
accuracy and loss per round, and each round's time split into its phases as stacked bars.
matplotlib is imported inside the functions: it takes about a second to import, and most users
of this module's callers never draw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PHASES", "Series", "accuracy_chart", "pyplot", "training_chart"]

#: the phases of a round in the order they happen (``job.status`` history ``phases``).
PHASES = ("distribution", "training", "collection", "aggregation", "validation")


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    values: Sequence[float]


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: never open a window
    import matplotlib.pyplot as plt

    return plt


def accuracy_chart(
    path: Path,
    series: Sequence[Series],
    *,
    title: str = "",
    width: int = 800,
    height: int = 500,
) -> None:
    """Accuracy (0..1) against round 1..n of each series, written to ``path`` as a PNG of
    ``width`` x ``height`` pixels."""
    if not series or not any(len(s.values) for s in series):
        raise ValueError("nothing to plot")
    plt = pyplot()
    dpi = 100
    fig, ax = plt.subplots(figsize=(width / dpi, height / dpi), dpi=dpi)
    try:
        for s in series:
            ax.plot(range(1, len(s.values) + 1), list(s.values), marker="o", label=s.label)
        ax.set_xlabel("round")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        if title:
            ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path, dpi=dpi, format="png")
    finally:
        plt.close(fig)


def training_chart(
    path: Path,
    history: Sequence[Mapping[str, Any]],
    *,
    centralized: Sequence[float] = (),
    title: str = "",
) -> None:
    """The demo's picture: accuracy and loss per round (with the centralized baseline's
    accuracy, if given) above each round's seconds per phase. ``history`` rows are
    ``job.status`` history rows: ``round``, ``accuracy``, ``loss``, ``phases``."""
    if not history:
        raise ValueError("nothing to plot")
    plt = pyplot()
    rounds = [int(h["round"]) for h in history]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 8), dpi=100, sharex=True)
    try:
        top.plot(rounds, [h["accuracy"] for h in history], marker="o", label="swarm accuracy")
        if centralized:
            xs = list(range(1, len(centralized) + 1))
            top.plot(xs, list(centralized), ls="--", color="grey", label="centralized accuracy")
        top.set_ylabel("test accuracy")
        top.set_ylim(0.0, 1.0)
        top.grid(alpha=0.3)
        loss_ax = top.twinx()
        loss_ax.plot(
            rounds, [h["loss"] for h in history], color="tab:red", marker=".", label="swarm loss"
        )
        loss_ax.set_ylabel("test loss")
        lines = top.get_lines() + loss_ax.get_lines()
        top.legend(lines, [ln.get_label() for ln in lines], loc="center right")
        if title:
            top.set_title(title)
        base = [0.0] * len(history)
        for phase in PHASES:
            secs = [float((h.get("phases") or {}).get(phase, 0.0)) for h in history]
            bottom.bar(rounds, secs, bottom=base, label=phase)
            base = [b + s for b, s in zip(base, secs, strict=True)]
        from matplotlib.ticker import MaxNLocator

        bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
        bottom.set_xlabel("round")
        bottom.set_ylabel("seconds")
        bottom.set_title("time per round by phase")
        bottom.legend(loc="upper left", fontsize="small", ncols=len(PHASES))
        bottom.set_ylim(0.0, max(base, default=0.0) * 1.25 + 0.01)  # room for the legend
        bottom.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
