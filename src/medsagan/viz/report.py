"""`medsagan report`: one self-contained HTML file that shows a run's result to a radiologist or a reviewer.

Everything is embedded (figures and heatmap panels as PNG data URIs, styles inline), so the file opens
from disk in any browser with no network access.
"""

import base64
import html
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
from ..evaluate.metrics import at_threshold
from ..evaluate.results import EvalResult, evaluate_run, finished_evaluation
from ..files import atomic_write_text, check_output
from ..runs import RunDir, load_detector
from .heatmaps import gallery
from .plots import draw_curves

BOOTSTRAP = 2000  # resamples of the 95 % intervals
BOOTSTRAP_SEED = 0
SPECIFICITIES = (0.90, 0.95)
GALLERY = 6  # panels per gallery


def bootstrap_intervals(labels: np.ndarray, scores: np.ndarray, resamples: int = BOOTSTRAP) -> dict[str, tuple]:
    """95 % percentile intervals of AUC and AP over seeded resamples of the images (with replacement)."""
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
    detector, cfg, _ = load_detector(run_dir, device)
    source = open_source(cfg)
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
    vmax = result.calibration.heatmap_vmax if result.calibration else None
    shown = {}
    for title, picks in groups.items():
        captions = [f"{Path(result.paths[i]).name}  score {scores[i]:.4f}" for i in picks]
        panels = gallery(detector, source, cfg, [result.ids[i] for i in picks], captions, vmax)
        shown[title] = [_image_uri(p) for p in panels]
    return shown


def _image_uri(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in ("medsagan", "torch", "numpy", "scikit-learn", "matplotlib", "pillow", "pydicom"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def read_log(path: Path) -> list[dict]:
    """The records of log.jsonl; a torn line (a run killed mid-write) is left out."""
    records = []
    for line in path.read_text(errors="replace").splitlines() if path.is_file() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


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
    """The report's HTML from its parts; every text is escaped."""
    e = html.escape
    auc_low, auc_high = intervals["auc"]
    ap_low, ap_high = intervals["ap"]
    rows = "".join(
        f"<tr><td>{e(p['name'])}</td><td>{p['threshold']:.5f}</td><td>{p['sensitivity']:.3f}</td>"
        f"<td>{p['specificity']:.3f}</td><td>{p['precision']:.3f}</td><td>{p['f1']:.3f}</td>"
        f"<td>{p['tp']}</td><td>{p['fp']}</td><td>{p['tn']}</td><td>{p['fn']}</td></tr>"
        for p in points
    )
    sections = "".join(
        f"<h3>{e(title)}</h3>"
        + ("".join(f'<img class="panel" src="{uri}" alt="{e(title)}">' for uri in uris) or "<p>none</p>")
        for title, uris in galleries.items()
    )
    training_html = f'<img src="{training}" alt="training curves">' if training else "<p>no training log</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>medsagan report: {e(Path(run_dir).name)} ({e(result.split)})</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1320px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.headline {{ font-size: 1.4em; }} .panel {{ margin: 4px; border: 1px solid #ddd; }}
pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.85em; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>medsagan report: {e(str(run_dir))}</h1>
<p class="headline" id="headline">{e(result.split)} split: AUC <b id="auc">{result.auc:.3f}</b>
[95 % CI {auc_low:.3f}, {auc_high:.3f}], AP <b id="ap">{result.ap:.3f}</b> [95 % CI {ap_low:.3f}, {ap_high:.3f}]
({result.n_normal} normal, {result.n_abnormal} abnormal images)</p>
<p>Checkpoint: iteration {result.checkpoint.iteration}, chosen by {e(result.checkpoint.selection)}.
Scoring: {e(result.scoring)}. Intervals: percentile bootstrap over {intervals["resamples"]} seeded resamples of
the images.</p>
<img src="{curves}" alt="ROC, precision-recall and score histograms">
<h2>Operating points</h2>
<table><tr><th>threshold</th><th>value</th><th>sensitivity</th><th>specificity</th><th>precision</th><th>F1</th>
<th>TP</th><th>FP</th><th>TN</th><th>FN</th></tr>{rows}</table>
<h2>Heatmaps</h2>
<p>Each panel: input, restored (healthy-looking) image, and the anomaly map |x - x'| / 2 on the run's fixed
colour scale.</p>
{sections}
<h2>Training</h2>
{training_html}
<h2>Data</h2>
<pre>{e(json.dumps(data_summary, indent=1))}</pre>
<h2>Configuration</h2>
<pre>{e(config_text)}</pre>
<h2>Software</h2>
<pre>{e(json.dumps(versions, indent=1))}</pre>
</body></html>
"""
