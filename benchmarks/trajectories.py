"""One figure of several benchmark rows: per seed, the selection signal and the test AUC against iteration.

    python benchmarks/trajectories.py "small data=benchmarks/runs/small-ep51-smooth" ... --out docs/trajectories.png

Each LABEL=FOLDER is a row of benchmarks/pneumonia64.py (its seedN/ runs). Reads the trajectory.json that
trajectory.py wrote in each run (the test split was read once, after training, for every kept checkpoint;
nothing here selects anything) and draws one panel per row: for each seed the signal that chose the
checkpoint (dashed), the test AUC (solid) and the chosen checkpoint (a ring).
"""

import argparse
import json
import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medsagan.files import atomic_write

SIGNALS = {"aucp": "held-out AUCp", "aucp_heldout": "held-out AUCp", "labelled": "labelled val AUC"}


def read_row(folder: Path) -> dict[int, dict]:
    """Seed -> that run's trajectory.json, for every seedN/ in `folder` that has one."""
    found = {}
    for run in sorted(folder.glob("seed*")):
        path = run / "trajectory.json"
        if run.is_dir() and path.is_file():
            found[int(run.name.removeprefix("seed"))] = json.loads(path.read_text())
    if not found:
        raise SystemExit(f"{folder}: no seedN/trajectory.json; run benchmarks/trajectory.py on its runs first")
    return found


def draw(rows: dict[str, dict[int, dict]], out: Path) -> None:
    fig = Figure(figsize=(4.2 * len(rows), 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(rows), squeeze=False)[0]
    for ax, (label, seeds) in zip(axes, rows.items(), strict=True):
        signal = None
        for seed, result in sorted(seeds.items()):
            points = result["points"]
            x = [p["iteration"] for p in points]
            color = f"C{seed % 10}"
            signal = SIGNALS.get(result["validation"], result["validation"])
            ax.plot(x, [p["selection_metric"] for p in points], ls="--", lw=1, color=color)
            ax.plot(x, [p["test_auc"] for p in points], lw=1.6, color=color, label=f"seed {seed}")
            chosen = result["picks"].get("selection_metric")
            if chosen:
                ax.plot(chosen["iteration"], chosen["test_auc"], "o", mfc="none", ms=9, color=color)
        ax.set(title=label, xlabel="iteration", ylabel="AUC")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right", title=f"solid: test AUC; dashed: {signal}", title_fontsize=7)
    fig.tight_layout()
    atomic_write(out, lambda handle: fig.savefig(handle, format="png", dpi=110))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", metavar="LABEL=FOLDER")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    rows = {}
    for item in args.rows:
        label, sep, folder = item.partition("=")
        if not sep or not label or not folder:
            raise SystemExit(f"{item}: expected LABEL=FOLDER, for example 'small data=benchmarks/runs/small'")
        rows[label] = read_row(Path(folder))
    draw(rows, args.out)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
