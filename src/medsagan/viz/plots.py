"""Evaluation figures: ROC and precision-recall curves and the score histogram per class.

Drawn with matplotlib's object API (a Figure with the Agg canvas), so importing medsagan never touches
the pyplot state or the backend of a notebook that uses it.
"""

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from ..files import atomic_write


def evaluation_figure(
    labels: np.ndarray, scores: np.ndarray, auc: float, ap: float, threshold: float | None, path: str | Path
) -> Path:
    """Write ROC, precision-recall and the score histograms by class (threshold drawn) as one PNG."""
    fig = Figure(figsize=(13, 3.8))
    FigureCanvasAgg(fig)
    roc_ax, pr_ax, hist_ax = fig.subplots(1, 3)
    fpr, tpr, _ = roc_curve(labels, scores)
    roc_ax.plot(fpr, tpr, color="C3")
    roc_ax.plot([0, 1], [0, 1], ls=":", color="grey")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, AUC {auc:.3f}")
    precision, recall, _ = precision_recall_curve(labels, scores)
    pr_ax.step(recall, precision, where="post", color="C0")
    pr_ax.axhline(labels.mean(), ls=":", color="grey")
    pr_ax.set(xlabel="recall", ylabel="precision", title=f"precision-recall, AP {ap:.3f}")
    bins = np.linspace(scores.min(), scores.max(), 40)
    hist_ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label="normal", color="C2")
    hist_ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label="abnormal", color="C3")
    if threshold is not None:
        hist_ax.axvline(threshold, color="black", ls="--", label="threshold")
    hist_ax.set(xlabel="anomaly score", ylabel="images", title="scores by class")
    hist_ax.legend()
    fig.tight_layout()
    return atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))


def draw_curves(result) -> Path:
    """RESULT.output/curves.png for a finished evaluation (evaluate.results.EvalResult)."""
    return evaluation_figure(
        result.labels, result.scores, result.auc, result.ap, result.threshold, result.output / "curves.png"
    )


def benchmark_figure(rows: list[dict], path: str | Path) -> Path:
    """Test AUC by row of a benchmark: each seed a point, the mean a bar with its sample sd.

    A row's `reference_auc` (a published figure) is drawn as a hollow diamond.
    """
    fig = Figure(figsize=(max(4.0, 1.1 * len(rows) + 1.5), 3.8))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for x, row in enumerate(rows):
        values = np.asarray(row["auc_per_seed"])
        spread = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
        ax.scatter(x + spread, values, s=18, color="C0", zorder=3, label="a seed" if x == 0 else None)
        sd = row["auc_sd"] or 0.0
        ax.errorbar(
            x,
            row["auc"],
            yerr=sd,
            fmt="_",
            markersize=22,
            color="C3",
            capsize=4,
            zorder=2,
            label="mean ± sd" if x == 0 else None,
        )
    referenced = [(x, row["reference_auc"]) for x, row in enumerate(rows) if row.get("reference_auc") is not None]
    if referenced:
        xs, values = zip(*referenced, strict=True)
        ax.scatter(xs, values, s=42, marker="D", facecolors="none", edgecolors="C2", zorder=4, label="reference AUC")
    ax.set_xticks(range(len(rows)), [row["row"] for row in rows], rotation=20, ha="right")
    ax.set(ylabel="test AUC", title="test AUC by row")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
