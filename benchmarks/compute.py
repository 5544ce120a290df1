"""Accuracy against counted compute: test AUC of every kept checkpoint against cumulative TFLOP and minutes.

    python benchmarks/compute.py TAG [TAG ...] [--runs benchmarks/runs] [--out benchmarks/runs/compute.png]

For each benchmark tag (benchmarks/runs/TAG/seedN, as pneumonia64.py writes them, with their trajectory.json),
every seed's curve of test AUC (read once after training, for this plot only; selection never saw it) against
the training compute spent up to that checkpoint (speed.training_compute's count: FLOPs per iteration times
iterations, plus the validations so far) and against the wall minutes the run logged. Prints a Markdown row per
tag: TFLOP per run, minutes, and test AUC / AP mean ± sd of the chosen checkpoints.
"""

import argparse
import json
import statistics
from pathlib import Path

import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medsagan.compute import training_compute
from medsagan.files import atomic_write

RUNS = Path(__file__).resolve().parent / "runs"


def minutes_at(run_dir: Path) -> dict[int, float]:
    """Iteration -> wall minutes of training so far, from the log's images per second of each window."""
    batch = yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["batch_size"]
    elapsed, last, found = 0.0, 0, {}
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "images_per_s" not in record:
            continue
        iteration = int(record["iteration"])
        elapsed += (iteration - last) * batch / record["images_per_s"]
        last = iteration
        found[iteration] = elapsed / 60
    return found


def curve(run_dir: Path) -> dict:
    """One seed's points: iteration, cumulative TFLOP, minutes, test AUC."""
    compute = training_compute(run_dir)
    points = json.loads((run_dir / "trajectory.json").read_text())["points"]
    minutes = minutes_at(run_dir)
    per_iteration = compute["gflop_per_iteration"] / 1e3
    validation_each = compute["validation_tflop"] / max(1, len(points) + 1)
    rows = []
    for index, point in enumerate(points, start=1):
        iteration = point["iteration"]
        near = max((i for i in minutes if i <= iteration), default=None)
        rows.append(
            {
                "iteration": iteration,
                "tflop": iteration * per_iteration + index * validation_each,
                "minutes": minutes.get(near, float("nan")) if near else float("nan"),
                "test_auc": point.get("test_auc"),
            }
        )
    return {"compute": compute, "points": rows}


def summarise(tag: str, runs: Path) -> dict:
    """Per-seed curves and the chosen checkpoints' figures of one tag."""
    seeds = sorted(p for p in (runs / tag).glob("seed*") if (p / "benchmark.json").is_file())
    if not seeds:
        raise SystemExit(f"{runs / tag}: no finished seed (seedN/benchmark.json); run benchmarks/pneumonia64.py first")
    results = [json.loads((p / "benchmark.json").read_text()) for p in seeds]
    curves = {p.name: curve(p) for p in seeds}
    sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
    aucs, aps = [r["auc"] for r in results], [r["ap"] for r in results]
    return {
        "tag": tag,
        "seeds": [r["seed"] for r in results],
        "auc": (statistics.mean(aucs), sd(aucs)),
        "ap": (statistics.mean(aps), sd(aps)),
        "per_seed_auc": aucs,
        "tflop": statistics.mean(c["compute"]["training_tflop"] for c in curves.values()),
        "minutes": statistics.mean(r["train_seconds"] / 60 for r in results),
        "curves": curves,
    }


def plot(summaries: list[dict], path: Path, references: list[tuple[str, float, list[float]]] = ()) -> None:
    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for summary, colour in zip(summaries, colours, strict=False):
        for index, data in enumerate(summary["curves"].values()):
            label = summary["tag"] if index == 0 else None
            for ax, key in zip(axes, ("tflop", "minutes"), strict=True):
                xs = [p[key] for p in data["points"]]
                ys = [p["test_auc"] for p in data["points"]]
                ax.plot(xs, ys, color=colour, alpha=0.8, lw=1.2, label=label, marker=".", ms=3)
    for (label, tflop, aucs), colour in zip(references, ["black", "grey", "tab:olive"], strict=False):
        axes[0].scatter([tflop] * len(aucs), aucs, color=colour, marker="x", s=30, label=label, zorder=3)
    axes[0].set_xlabel("training compute so far (TFLOP, counted)")
    axes[1].set_xlabel("training minutes so far (as logged; machine and load differ between runs)")
    axes[0].set_ylabel("test AUC of the checkpoint (read after training)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("pneumonia64: accuracy against compute, one line per seed", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tags", nargs="+")
    parser.add_argument("--runs", default=str(RUNS))
    parser.add_argument("--out", default=str(RUNS / "compute.png"))
    parser.add_argument(
        "--point",
        nargs=3,
        action="append",
        default=[],
        metavar=("LABEL", "TFLOP", "AUCS"),
        help="a reference without its run folder, such as a preset's published per-seed AUCs: 'old' 265 0.905,0.932",
    )
    args = parser.parse_args()
    summaries = [summarise(tag, Path(args.runs)) for tag in args.tags]
    references = [(label, float(tflop), [float(a) for a in aucs.split(",")]) for label, tflop, aucs in args.point]
    plot(summaries, Path(args.out), references)
    print("| tag | seeds | TFLOP per run | minutes per run | test AUC | test AP | per seed |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for s in summaries:
        per_seed = " / ".join(f"{a:.3f}" for a in s["per_seed_auc"])
        print(
            f"| {s['tag']} | {len(s['seeds'])} | {s['tflop']:.0f} | {s['minutes']:.1f} | "
            f"{s['auc'][0]:.3f} ± {s['auc'][1]:.3f} | {s['ap'][0]:.3f} ± {s['ap'][1]:.3f} | {per_seed} |"
        )


if __name__ == "__main__":
    main()
