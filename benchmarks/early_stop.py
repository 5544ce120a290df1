"""What `train.patience` would have done to finished runs, exactly, without training them again.

    python benchmarks/early_stop.py FOLDER [FOLDER ...] [--patience 3 5 8] [--markdown]

A run that ends early is the same run cut short: selection never feeds back into training and the learning
rate follows iterations, so up to the iteration it ends at, its weights and logged selection metric are the
full run's. So for every seedN/ run in each FOLDER (a row of benchmarks/pneumonia64.py, kept with a state at
every validation), this replays its logged selection metric with each patience: where the run would have
ended, the share of its iterations that is, and the checkpoint it would have chosen against the one the full
run chose. Where the run has a development AUC per checkpoint (devset.json or selection-signals.json from
devset.py / selection_signals.py), both picks' dev AUCs are shown: that is the figure to choose a patience by.
The test AUC of each pick is read from trajectory.json (the test split was read once after training, for
every kept checkpoint), for the record only.
"""

import argparse
import json
from pathlib import Path

from trajectories import read_row

from medsagan.config import selection_start
from medsagan.runs import RunDir
from medsagan.train import ends_early


def replay(metric: dict[int, float], select_from: int, every: int, iterations: int, patience: int) -> tuple[int, int]:
    """(iteration the run ends at, iteration it chooses) with `patience`, from its logged selection metric."""
    best = None
    for step in sorted(metric):
        if step < select_from:
            continue
        if best is None or metric[step] > metric[best]:
            best = step
        if step < iterations and step % every == 0 and ends_early(step, best, patience, every):
            return step, best
    return iterations, best


def dev_aucs(run: Path) -> dict[int, float]:
    """Iteration -> dev AUC of the checkpoint, from whichever development record the run has."""
    for name in ("devset.json", "selection-signals.json"):
        path = run / name
        if path.is_file():
            return {p["iteration"]: p["dev_auc"] for p in json.loads(path.read_text())["points"] if "dev_auc" in p}
    return {}


def study(folders: list[str], patiences: list[int]) -> list[dict]:
    """One record per (run, patience)."""
    records = []
    for folder in folders:
        for seed, result in read_row(Path(folder)).items():
            run = Path(folder) / f"seed{seed}"
            cfg = RunDir(run).load_config()
            points = result["points"]
            metric = {p["iteration"]: p["selection_metric"] for p in points}
            test = {p["iteration"]: p["test_auc"] for p in points}
            dev = dev_aucs(run)
            t = cfg.train
            full_end, full_pick = replay(metric, selection_start(cfg), t.validate_every, t.iterations, 0)
            for patience in patiences:
                end, pick = replay(metric, selection_start(cfg), t.validate_every, t.iterations, patience)
                records.append(
                    {
                        "run": f"{Path(folder).name}/{run.name}",
                        "patience": patience,
                        "ends_at": end,
                        "iterations": full_end,
                        "pick": pick,
                        "full_pick": full_pick,
                        "dev_auc": dev.get(pick),
                        "full_dev_auc": dev.get(full_pick),
                        "test_auc": test[pick],
                        "full_test_auc": test[full_pick],
                    }
                )
    return records


def markdown(records: list[dict]) -> str:
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [
        "| run | patience | ends at (share) | chosen (full run) | dev AUC (full run) | test AUC (full run) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        lines.append(
            f"| {r['run']} | {r['patience']} | {r['ends_at']} ({r['ends_at'] / r['iterations']:.0%}) | "
            f"{r['pick']} ({r['full_pick']}) | {fmt(r['dev_auc'])} ({fmt(r['full_dev_auc'])}) | "
            f"{r['test_auc']:.3f} ({r['full_test_auc']:.3f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--patience", type=int, nargs="+", default=[3, 5, 8])
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    records = study(args.folders, args.patience)
    print(markdown(records) if args.markdown else json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
