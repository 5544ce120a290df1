"""Accuracy on real chest X-rays: train on ../shared/data/medad-pneumonia64 (the paper's Med-AD layout and
protocol: 700 labelled normals, 280 + 420 unlabelled) and report test AUC and AP over several seeds.

    python benchmarks/pneumonia64.py [--iterations N] [--seeds 0 1 2] [--preset fast] [--data PATH] [KEY=VALUE ...]
    python benchmarks/pneumonia64.py --tag small data.labeled_size=200 data.unlabeled_size=200   # small-data row
    python benchmarks/pneumonia64.py --tag breast --data ../shared/data/breastmnist/breastmnist.npz

Each seed is a full run: training with label-free selection (held-out normals against held-out unlabelled
images) or, where the data has one, a labelled val split; a threshold fitted on validation data; then the
test split, read after training, for the chosen checkpoint (`medsagan evaluate`) and, for the per-seed plot
only, for every checkpoint kept (trajectory.py). Writes benchmarks/runs/<tag>/summary.json and prints a
Markdown row with mean and sample standard deviation. A seed whose run has finished (seedN/benchmark.json)
is read back, not retrained, so seeds can train as separate processes and be summarised afterwards.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from trajectory import trajectory

from medsagan import evaluate_run, fit, load_config
from medsagan.compute import training_compute
from medsagan.config import merge, parse_overrides
from medsagan.devices import machine_name
from medsagan.files import atomic_write_text
from medsagan.runs import RunDir

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "medad-pneumonia64"


def run_iterations(run: RunDir) -> int:
    """The iterations a run trained, as train.epochs or an early end resolved them; an ensemble's, summed."""
    return sum(run_iterations(m) for m in run.members()) or run.load_config().train.iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=0, help="0: the preset's")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "runs"))
    parser.add_argument("--tag", default="")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    tag = args.tag or f"{args.preset}-{args.iterations or 'default'}" + "".join(f"-{o}" for o in args.overrides)
    out = Path(args.out) / tag
    results = []
    for seed in args.seeds:
        run_dir = out / f"seed{seed}"
        done = run_dir / "benchmark.json"
        if done.is_file():
            results.append(json.loads(done.read_text()))
            print(json.dumps(results[-1]), flush=True)
            continue
        train = {"seed": seed, "device": "cpu", **({"iterations": args.iterations} if args.iterations else {})}
        overrides = merge(parse_overrides(args.overrides), {"data": {"path": args.data}, "train": train})
        cfg = load_config(overrides=overrides, preset=args.preset)
        # Keep a state at every validation, for the per-seed plot (selection still uses validation data only).
        every = cfg.train.validate_every
        cfg = cfg.replace(train={"checkpoint_every": every, "keep_checkpoints": cfg.train.iterations // every + 1})
        resume = (run_dir / "config.yaml").is_file()
        if resume:
            # The run's own config: what train.epochs, a budget or an early end resolved stays as the run saved it.
            cfg = RunDir(run_dir).resumed_config()
        started = time.perf_counter()
        fit(cfg, run_dir, resume=resume, progress=False)
        seconds = time.perf_counter() - started
        # A public file may hold test images that are copies of training ones: they are left out and counted.
        result = evaluate_run(run_dir, drop_duplicates=True)
        # An ensemble keeps its members' checkpoints, not its own: there is no trajectory of the whole to score.
        picks = {} if RunDir(run_dir).members() else trajectory(run_dir)["picks"]
        results.append(
            {
                "seed": seed,
                "auc": result.auc,
                "ap": result.ap,
                "train_seconds": round(RunDir(run_dir).train_seconds() or seconds),  # summed over resumed parts
                "training_tflop": training_compute(run_dir)["training_tflop"],
                "chosen_iteration": result.checkpoint.iteration,
                "aucp": result.checkpoint.value,
                "sensitivity": result.at_threshold["sensitivity"],
                "specificity": result.at_threshold["specificity"],
                "threads": torch.get_num_threads(),
                "iterations": run_iterations(RunDir(run_dir)),  # as run (train.epochs resolves)
                "test_images_left_out_as_copies_of_training": result.dropped_duplicates,
                "selection": result.checkpoint.selection,
                "test_auc_if_chosen_by": {k: round(v["test_auc"], 4) for k, v in picks.items()},
            }
        )
        atomic_write_text(done, json.dumps(results[-1]))
        print(json.dumps(results[-1]), flush=True)
    summary = {
        "data": args.data,
        "preset": args.preset,
        "iterations": sorted({r.get("iterations", args.iterations) for r in results}),
        "overrides": args.overrides,
        "machine": f"{machine_name(torch.device('cpu'))}, {torch.get_num_threads()} threads",
        "auc_mean": statistics.mean(r["auc"] for r in results),
        "ap_mean": statistics.mean(r["ap"] for r in results),
        "auc_sd": statistics.stdev(r["auc"] for r in results) if len(results) > 1 else 0.0,
        "ap_sd": statistics.stdev(r["ap"] for r in results) if len(results) > 1 else 0.0,
        "train_seconds_mean": statistics.mean(r["train_seconds"] for r in results),
        "training_tflop_mean": statistics.mean(r.get("training_tflop", 0) for r in results),
        "runs": results,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    print(
        f"| {args.preset} {' '.join(args.overrides)} | {summary['iterations']} | {len(results)} | "
        f"{summary['auc_mean']:.3f} ± {summary['auc_sd']:.3f} | {summary['ap_mean']:.3f} ± {summary['ap_sd']:.3f} | "
        f"{summary['training_tflop_mean']:.0f} TFLOP | {summary['train_seconds_mean'] / 60:.0f} min |"
    )


if __name__ == "__main__":
    main()
