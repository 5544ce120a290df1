"""Per-checkpoint figures of a finished benchmark run, for the README only (never used to select anything).

    python benchmarks/trajectory.py RUN [RUN ...] [--raw-generator] [--select-from ITERATION]

For every training state the run kept: the label-free selection metric it logged while training, AUCp against
the unlabelled images it trained on (the older selection signal, which also rewards memorising them), and the
test AUC and AP, from one read of the test split after training. Writes trajectory.json and trajectory.png in
the run folder, and says which checkpoint each selection signal would have picked (the selection metric among
the checkpoints the run's evaluation.select_from allows, and with --select-from among those from ITERATION on:
what a run with that setting chooses, as selection never feeds back into training). Scoring is deterministic,
so the points of an existing trajectory.json that lists every kept state are reused.
"""

import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medsagan.config import selection_start
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


def trajectory(run_dir: str | Path, select_from: int | None = None) -> dict:
    """Figures per kept checkpoint, and the test AUC each selection signal's choice would have had."""
    run = RunDir(run_dir)
    cfg = run.load_config()
    points = saved_points(run)
    if points is None:
        points = score_checkpoints(run, cfg)
    kind = json.loads(run.data.read_text())["validation"]["kind"]
    result = {"validation": kind, "points": points, "picks": picks(points, selection_start(cfg), select_from)}
    atomic_write_text(run.path / "trajectory.json", json.dumps(result, indent=1))
    plot(result, run.path / "trajectory.png", f"{run.path.parent.name} / {run.path.name}")
    return result


def picks(points: list[dict], run_start: int, select_from: int | None = None) -> dict[str, dict]:
    """The checkpoint each signal would choose: the selection metric from the run's own first eligible
    iteration (and from `select_from`), AUCp on the training unlabelled images, and the last one."""
    starts = {"selection_metric": run_start, "aucp_training_unlabeled": 0}
    if select_from is not None:
        starts[f"selection_metric_from_{select_from}"] = select_from
    chosen = {}
    for name, start in starts.items():
        signal = "aucp_training_unlabeled" if name == "aucp_training_unlabeled" else "selection_metric"
        usable = [p for p in points if p.get(signal) is not None and p["iteration"] >= start]
        if usable:
            best = max(usable, key=lambda p: p[signal])  # the first of equals, as training keeps it
            chosen[name] = {k: best[k] for k in ("iteration", "test_auc", "test_ap")}
    if points:
        chosen["last"] = {k: points[-1][k] for k in ("iteration", "test_auc", "test_ap")}
    return chosen


def saved_points(run: RunDir) -> list[dict] | None:
    """The points of RUN/trajectory.json when it is newer than, and covers, every kept training state; else None."""
    path = run.path / "trajectory.json"
    if not path.is_file() or any(state.stat().st_mtime > path.stat().st_mtime for state in run.states()):
        return None
    points = json.loads(path.read_text()).get("points", [])
    kept = [int(p.stem.split("-")[-1]) for p in run.states()]
    return points if [p["iteration"] for p in points] == kept else None


def score_checkpoints(run: RunDir, cfg) -> list[dict]:
    """Test AUC and AP of every kept training state (one read of the test split), with the logged metric."""
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
    return points


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
    parser.add_argument("--select-from", type=int, help="also pick by the selection metric from this iteration on")
    args = parser.parse_args()
    for run_dir in args.runs:
        found = raw_generator(run_dir) if args.raw_generator else trajectory(run_dir, args.select_from)
        print(run_dir, json.dumps(found.get("pick") or found.get("picks")), flush=True)
