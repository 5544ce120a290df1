"""Per-checkpoint figures of a finished benchmark run, for the README only (never used to select anything).

    python benchmarks/trajectory.py RUN [RUN ...] [--raw-generator]

For every training state the run kept: the label-free selection metric it logged while training, AUCp against
the unlabelled images it trained on (the older selection signal, which also rewards memorising them), and the
test AUC and AP, from one read of the test split after training. Writes trajectory.json and trajectory.png in
the run folder, and says which checkpoint each selection signal would have picked.
"""

import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medsagan.data.dataset import build_training_data, load_split, without_duplicates
from medsagan.data.sources import open_source
from medsagan.evaluate.metrics import auc, average_precision
from medsagan.evaluate.scoring import score_images
from medsagan.files import atomic_write, atomic_write_text, load_tensors
from medsagan.models import AnomalyDetector, build_generator
from medsagan.runs import RunDir


def separation(detector: AnomalyDetector, negative, positive) -> float:
    """AUC of `positive` images against `negative` ones by anomaly score."""
    low, high = score_images(detector, negative).scores, score_images(detector, positive).scores
    return auc(np.r_[np.zeros(len(low)), np.ones(len(high))], np.r_[low, high])


def logged_metric(run: RunDir) -> dict[int, float]:
    """Iteration -> the selection metric the run logged while training."""
    found = {}
    for line in run.log.read_text().splitlines():
        record = json.loads(line)
        for key in ("val/aucp", "val/auc"):
            if key in record:
                found[int(record["iteration"])] = float(record[key])
    return found


def trajectory(run_dir: str | Path) -> dict:
    """Figures per kept checkpoint, and the test AUC each selection signal's choice would have had."""
    run = RunDir(run_dir)
    cfg = run.load_config()
    source = open_source(cfg)
    data = build_training_data(source, cfg, run.cache_dir(cfg))
    test, _ = without_duplicates(load_split(source, "test", cfg, run.cache_dir(cfg)), run.load_digests() or {})
    labels = test.labels.numpy()
    detector = AnomalyDetector(build_generator(cfg.model)).eval()
    logged = logged_metric(run)
    points = []
    for path in run.states():
        state = load_tensors(path, "medsagan training checkpoint")
        detector.generator.load_state_dict(state.get("ema", state["generator"]))
        scores = score_images(detector, test.images).scores
        point = {
            "iteration": int(state["iteration"]),
            "selection_metric": logged.get(int(state["iteration"])),
            "test_auc": auc(labels, scores),
            "test_ap": average_precision(labels, scores),
        }
        if data.val_normal is not None and len(data.unlabeled):
            point["aucp_training_unlabeled"] = separation(detector, data.val_normal.images, data.unlabeled.images)
        points.append(point)
    picks = {}
    for signal in ("selection_metric", "aucp_training_unlabeled"):
        usable = [p for p in points if p.get(signal) is not None]
        if usable:
            best = max(usable, key=lambda p: p[signal])
            picks[signal] = {"iteration": best["iteration"], "test_auc": best["test_auc"], "test_ap": best["test_ap"]}
    if points:
        picks["last"] = {k: points[-1][k] for k in ("iteration", "test_auc", "test_ap")}
    result = {"validation": data.validation, "points": points, "picks": picks}
    atomic_write_text(run.path / "trajectory.json", json.dumps(result, indent=1))
    plot(result, run.path / "trajectory.png", f"{run.path.parent.name} / {run.path.name}")
    return result


def plot(result: dict, path: Path, title: str) -> None:
    fig = Figure(figsize=(6.5, 3.8))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    points = result["points"]
    x = [p["iteration"] for p in points]
    series = [
        ("selection_metric", f"selection metric ({result['validation']})", "C0"),
        ("aucp_training_unlabeled", "AUCp on training unlabelled (old signal)", "C1"),
        ("test_auc", "test AUC (read after training)", "C3"),
    ]
    for key, label, color in series:
        y = [p.get(key) for p in points]
        if any(v is not None for v in y):
            ax.plot(x, [np.nan if v is None else v for v in y], marker="o", ms=3, label=label, color=color)
    chosen = result["picks"].get("selection_metric")
    if chosen:
        ax.axvline(chosen["iteration"], color="grey", ls="--", lw=1, label="chosen checkpoint")
    ax.set(xlabel="iteration", ylabel="AUC", title=title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))


def raw_generator(run_dir: str | Path) -> dict:
    """The EMA ablation inside one run: the same checkpoints scored with the trained generator's own weights.

    The average never feeds back into training, so a run that keeps one holds both arms of the comparison.
    Selection uses the same label-free metric (held-out normals against held-out unlabelled images).
    """
    run = RunDir(run_dir)
    cfg = run.load_config()
    source = open_source(cfg)
    data = build_training_data(source, cfg, run.cache_dir(cfg))
    test, _ = without_duplicates(load_split(source, "test", cfg, run.cache_dir(cfg)), run.load_digests() or {})
    labels = test.labels.numpy()
    detector = AnomalyDetector(build_generator(cfg.model)).eval()
    points = []
    for path in run.states():
        state = load_tensors(path, "medsagan training checkpoint")
        detector.generator.load_state_dict(state["generator"])
        scores = score_images(detector, test.images).scores
        points.append(
            {
                "iteration": int(state["iteration"]),
                "selection_metric": separation(detector, data.val_normal.images, data.val_positive.images),
                "test_auc": auc(labels, scores),
                "test_ap": average_precision(labels, scores),
            }
        )
    best = max(points, key=lambda p: p["selection_metric"])
    result = {"weights": "generator (no moving average)", "points": points, "pick": best}
    atomic_write_text(run.path / "trajectory-raw-generator.json", json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--raw-generator", action="store_true", help="score the generator's own weights")
    args = parser.parse_args()
    for run_dir in args.runs:
        found = raw_generator(run_dir) if args.raw_generator else trajectory(run_dir)
        print(run_dir, json.dumps(found.get("pick") or found.get("picks")), flush=True)
