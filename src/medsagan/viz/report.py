"""`medsagan report`: one self-contained HTML file that shows a run's result to a radiologist or a reviewer.

Everything is embedded (figures and heatmap panels as PNG data URIs, styles inline), so the file opens
from disk in any browser with no network access.
"""

import base64
import io
import json
import platform
import sys
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from ..data.sources import open_source
from ..devices import cpu_model
from ..evaluate.metrics import at_threshold
from ..evaluate.results import EvalResult, evaluate_run, finished_evaluation
from ..files import atomic_write_text, check_output
from ..inference import Detector
from ..runs import RunDir
from ..training_log import read_log
from .heatmaps import gallery
from .pages import render_page
from .plots import draw_curves

BOOTSTRAP = 2000  # resamples of the 95 % intervals
BOOTSTRAP_SEED = 0
SPECIFICITIES = (0.90, 0.95)
GALLERY = 6  # panels per gallery


def bootstrap_intervals(labels: np.ndarray, scores: np.ndarray, resamples: int = BOOTSTRAP) -> dict[str, tuple]:
    """95 % percentile intervals of AUC and AP over seeded resamples of the images (with replacement)."""
    # Not scipy.stats.bootstrap: a resample that holds one class has no AUC and must be left out, while scipy
    # keeps every resample (a NaN there turns the whole interval into NaN).
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    aucs, aps = [], []
    for _ in range(resamples):
        pick = rng.integers(0, len(labels), len(labels))
        if labels[pick].min() == labels[pick].max():
            continue  # a resample with one class has no AUC
        aucs.append(roc_auc_score(labels[pick], scores[pick]))
        aps.append(average_precision_score(labels[pick], scores[pick]))
    interval = lambda values: tuple(float(v) for v in np.percentile(values, [2.5, 97.5]))  # noqa: E731
    return {"auc": interval(aucs), "ap": interval(aps), "resamples": len(aucs)}


def operating_points(result: EvalResult) -> list[dict]:
    """The run's threshold, and thresholds that give fixed specificities on this split's own normals."""
    labels, scores = result.labels, result.scores
    points = []
    if result.calibration is not None:
        t = result.calibration.threshold
        points.append({"name": f"run threshold ({t.rule}, fitted on {t.fitted_on})", "threshold": t.value})
    normals = np.sort(scores[labels == 0])
    for specificity in SPECIFICITIES:
        value = float(np.quantile(normals, specificity, method="higher"))
        name = f"specificity {specificity:.2f} on this split's normals (for reference: chosen with its labels)"
        points.append({"name": name, "threshold": value})
    return [{**p, **at_threshold(labels, scores, p["threshold"])} for p in points]


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _figure(width: float, height: float, columns: int = 1):
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, columns)


def curves_figure(result: EvalResult, intervals: dict) -> str:
    """ROC and precision-recall curves with AUC, AP and their intervals; score histograms with the threshold."""
    labels, scores = result.labels, result.scores
    fig, (roc_ax, pr_ax, hist_ax) = _figure(13, 3.9, 3)
    fpr, tpr, _ = roc_curve(labels, scores)
    roc_ax.plot(fpr, tpr, color="C3")
    roc_ax.plot([0, 1], [0, 1], ls=":", color="grey")
    low, high = intervals["auc"]
    roc_ax.set(
        xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC, AUC {result.auc:.3f} [{low:.3f}, {high:.3f}]"
    )
    precision, recall, _ = precision_recall_curve(labels, scores)
    pr_ax.step(recall, precision, where="post", color="C0")
    pr_ax.axhline(labels.mean(), ls=":", color="grey")
    low, high = intervals["ap"]
    pr_ax.set(
        xlabel="recall", ylabel="precision", title=f"precision-recall, AP {result.ap:.3f} [{low:.3f}, {high:.3f}]"
    )
    bins = np.linspace(scores.min(), scores.max(), 40)
    hist_ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label="normal", color="C2")
    hist_ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label="abnormal", color="C3")
    if result.threshold is not None:
        hist_ax.axvline(result.threshold, color="black", ls="--", label="threshold")
    hist_ax.set(xlabel="anomaly score", ylabel="images", title="scores by class")
    hist_ax.legend()
    fig.tight_layout()
    return _png(fig)


def training_figure(records: list[dict], chosen: int) -> str | None:
    """Losses and the validation metric against iteration, the chosen checkpoint marked."""
    losses = [r for r in records if "D/loss" in r]
    validation = [(r["iteration"], v) for r in records for k, v in r.items() if k.startswith("val/")]
    if not losses:
        return None
    fig, (loss_ax, val_ax) = _figure(13, 3.6, 2)
    steps = [r["iteration"] for r in losses]
    for key in ("D/loss", "G/loss", "G/identity", "G/restoration"):
        if any(key in r for r in losses):
            loss_ax.plot(steps, [r.get(key, np.nan) for r in losses], label=key)
    loss_ax.set(xlabel="iteration", title="training losses (window means)")
    loss_ax.legend(fontsize=8)
    if validation:
        val_ax.plot(*zip(*validation, strict=True), marker="o", color="C1")
    val_ax.axvline(chosen, color="black", ls="--", label=f"chosen: iteration {chosen}")
    val_ax.set(xlabel="iteration", title="validation metric (selection, no test labels)")
    val_ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _galleries(run_dir: Path, result: EvalResult, device: str) -> dict[str, list[str]]:
    """Heatmap panels: highest-scored abnormals, false positives, false negatives, lowest-scored normals."""
    model = Detector.open(run_dir, device)
    source = open_source(model.config)
    labels, scores, threshold = result.labels, result.scores, result.threshold
    order = np.argsort(-scores, kind="stable")
    normal, abnormal = order[labels[order] == 0], order[labels[order] == 1]
    groups = {"Highest-scored abnormal images": abnormal[:GALLERY]}
    if threshold is not None:
        groups["False positives (normal, at or above the threshold)"] = normal[scores[normal] >= threshold][:GALLERY]
        groups["False negatives (abnormal, below the threshold)"] = abnormal[scores[abnormal] < threshold][::-1][
            :GALLERY
        ]
    groups["Lowest-scored normal images"] = normal[::-1][:GALLERY]
    shown = {}
    for title, picks in groups.items():
        captions = [f"{Path(result.paths[i]).name}  score {scores[i]:.4f}" for i in picks]
        panels = gallery(model, source, [result.ids[i] for i in picks], captions)
        shown[title] = [_image_uri(p) for p in panels]
    return shown


def _image_uri(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0], "platform": platform.platform(), "processor": cpu_model()}
    for package in ("medsagan", "torch", "numpy", "scikit-learn", "matplotlib", "pillow", "pydicom"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def build_report(run_dir: str | Path, split: str = "test", out: str | Path | None = None, device: str = "auto") -> Path:
    """Evaluate `split` and write the HTML report (default RUN/report-SPLIT.html); its path."""
    if out is not None:
        check_output(out)
    run = RunDir(run_dir)
    result = finished_evaluation(run.path, split)
    if result is None:
        result = evaluate_run(run.path, split, device=device)
        draw_curves(result)
    intervals = bootstrap_intervals(result.labels, result.scores)
    records = read_log(run.log)
    data_summary = json.loads(run.data.read_text()) if run.data.is_file() else {}
    page = render(
        run.path,
        result,
        intervals,
        operating_points(result),
        curves_figure(result, intervals),
        training_figure(records, result.checkpoint.iteration),
        _galleries(run.path, result, device),
        run.config.read_text(),
        data_summary,
        _versions(),
    )
    target = Path(out) if out else run.path / f"report-{split}.html"
    atomic_write_text(target, page)
    return target


def render(run_dir, result, intervals, points, curves, training, galleries, config_text, data_summary, versions) -> str:
    """The report's HTML from its parts (viz/templates/report.html); every text is escaped."""
    return render_page(
        "report.html",
        run_dir=str(run_dir),
        run_name=Path(run_dir).name,
        members=len(RunDir(run_dir).members()),
        result=result,
        intervals=intervals,
        points=points,
        curves=curves,
        training=training,
        galleries=galleries,
        config_text=config_text,
        data_summary=data_summary,
        versions=versions,
    )
