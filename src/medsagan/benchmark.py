"""`medsagan benchmark`: a grid of settings, each trained over several seeds, evaluated once, summarised.

Every (row, seed) of a grid (grids.py) is an ordinary run under OUT/<row>/seed<N>, trained, then evaluated
once on the test split. A rerun skips what is finished, resumes what was interrupted and trains what is new,
and the summary (results.md, .csv, .json and .png) is rewritten from the runs' own records every time.
"""

import csv
import io
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .compute import training_compute
from .config import Config
from .data.sources import open_source
from .devices import machine_name, resolve_device
from .errors import ConfigError, DataError
from .evaluate.results import evaluate_run, finished_evaluation
from .files import LockHeld, RunLock, atomic_write_text, check_output
from .grids import Grid, Row, row_config
from .runs import RunDir
from .train import fit
from .viz.plots import benchmark_figure, draw_curves

RECORD = "benchmark.json"


@dataclass
class Benchmark:
    """A benchmark folder: OUT/benchmark.json, a run per (row, seed) and the summary files."""

    out: Path
    grid: Grid
    data: str
    machine: str = ""  # the processor, named when the benchmark runs

    def run_dir(self, row: Row, seed: int) -> Path:
        """Where the run of `row` with `seed` lives."""
        return self.out / row.name / f"seed{seed}"

    def record_path(self, row: Row, seed: int) -> Path:
        """The benchmark's own record of that run: its training time, compute and test metrics."""
        return self.out / row.name / f"seed{seed}.json"

    def check(self) -> list[tuple[Row, int, Config]]:
        """Every (row, seed) with its config, built before any work, against what OUT already holds."""
        check_output(self.out, kind="benchmark")
        record = self.out / RECORD
        if record.is_file():
            earlier = json.loads(record.read_text())
            if earlier.get("data") != self.data:
                raise DataError(
                    f"{self.out}: its runs trained on {earlier.get('data')}, not {self.data}; give that --data or "
                    "another --out"
                )
            for row in self.grid.rows:
                before = earlier.get("rows", {}).get(row.name)
                if before is not None and before != json.loads(json.dumps(row.to_dict())):
                    raise ConfigError(
                        f"{self.grid.path}: row {row.name!r} differs from the row of that name whose runs are in "
                        f"{self.out}; rename the row, or remove {self.out / row.name} to train it anew"
                    )
        seeds = self.grid.seeds
        planned = [(row, seed, row_config(self.grid, row, self.data, seed)) for row in self.grid.rows for seed in seeds]
        open_source(planned[0][2])  # the dataset is there and readable before anything trains
        return planned

    def prepare(self) -> list[tuple[Row, int, Config]]:
        """Check the grid against OUT, then mark OUT as this benchmark's; the planned runs."""
        planned = self.check()
        self.out.mkdir(parents=True, exist_ok=True)
        self.write_record()
        return planned

    def write_record(self) -> None:
        """OUT/benchmark.json: the data and every row ever run here (rows of earlier grids are kept)."""
        record = self.out / RECORD
        rows = json.loads(record.read_text()).get("rows", {}) if record.is_file() else {}
        rows.update({row.name: row.to_dict() for row in self.grid.rows})
        atomic_write_text(record, json.dumps({"data": self.data, "rows": rows}, indent=1, default=str))

    def run(
        self,
        device: str = "auto",
        drop_duplicates: bool = False,
        say: Callable[[str], None] = print,
        progress: bool = False,
        planned: list[tuple[Row, int, Config]] | None = None,
    ) -> int:
        """Train and evaluate every (row, seed) not finished yet; how many runs other processes held.

        `progress` shows each training's progress bar (on stderr), as `medsagan train` does. `planned`: what
        `prepare` returned, when the caller had to mark OUT before starting other jobs. The summary is the
        caller's to write (`summarise`), once those jobs are done too.
        """
        planned = planned if planned is not None else self.prepare()
        self.machine = machine_name(resolve_device(device))
        left = 0
        for number, (row, seed, cfg) in enumerate(planned, 1):
            where = f"[{number}/{len(planned)}] {row.name} seed {seed}"
            # Several processes may share one OUT (one per GPU): each run goes to the first to claim it.
            claim = RunLock(self.out / row.name, f"seed{seed}.lock")
            try:
                claim.acquire()
            except LockHeld as held:
                say(f"{where}: process {held.holder} has it; left to that process")
                left += 1
                continue
            try:
                done = self.run_one(row, seed, cfg, device, drop_duplicates, where, say, progress)
            finally:
                claim.release()
            say(f"{where}: test AUC {done['auc']:.3f}, AP {done['ap']:.3f}, {done['minutes']:.1f} min")
        return left

    def run_one(
        self,
        row: Row,
        seed: int,
        cfg: Config,
        device: str,
        drop_duplicates: bool,
        where: str,
        say: Callable,
        progress: bool = False,
    ) -> dict:
        """One run brought to its finished record: trained or resumed, evaluated once, its compute counted."""
        run_dir, path = self.run_dir(row, seed), self.record_path(row, seed)
        record = json.loads(path.read_text()) if path.is_file() else {"train_seconds": 0.0, "resumed": 0}
        if "auc" in record and finished_evaluation(run_dir) is not None:
            say(f"{where}: finished earlier")
            return record
        run = RunDir(run_dir)
        cfg = cfg.replace(train={"device": device})
        if not (run.config.is_file() and run.calibration.is_file()):
            resume = run.config.is_file()
            if resume:
                cfg = run.resumed_config({"device": device})
                record["resumed"] += 1
                say(f"{where}: resuming from iteration {run.done_iterations()}")
            else:
                say(f"{where}: training {row.describe()}")
            started = time.perf_counter()
            fit(cfg, run_dir, resume=resume, progress=progress)
            record["train_seconds"] += time.perf_counter() - started
            record["machine"] = self.machine
            atomic_write_text(path, json.dumps(record, indent=1))
        say(f"{where}: evaluating on the test split")
        result = finished_evaluation(run_dir)
        if result is None:
            result = evaluate_run(run_dir, "test", device=device, drop_duplicates=drop_duplicates)
            draw_curves(result)
        compute = training_compute(run_dir)
        record.update(
            row=row.name,
            seed=seed,
            auc=result.auc,
            ap=result.ap,
            chosen_iteration=result.checkpoint.iteration,
            selection=result.checkpoint.selection,
            iterations=compute["iterations"],
            training_tflop=compute["training_tflop"],
            minutes=(run.train_seconds() or record["train_seconds"]) / 60,
            threads=torch.get_num_threads(),
            dropped_duplicates=len(result.dropped_duplicates),
        )
        atomic_write_text(path, json.dumps(record, indent=1))
        return record

    def summarise(self) -> list[dict]:
        """results.json, .csv, .md and .png from the finished runs' records, rows in the grid's order."""
        runs = []
        for row in self.grid.rows:
            for seed in self.grid.seeds:
                path = self.record_path(row, seed)
                record = json.loads(path.read_text()) if path.is_file() else {}
                if "auc" in record:
                    runs.append(record)
        rows = [summary_row(row, [r for r in runs if r["row"] == row.name]) for row in self.grid.rows]
        rows = [r for r in rows if r["seeds"]]
        # Tabulating alone names no processor of its own: the runs' records name theirs.
        processor = self.machine or ", ".join(sorted({r["machine"] for r in runs if r.get("machine")}))
        machine = {"processor": processor, "torch": torch.__version__}
        summary = {"grid": str(self.grid.path), "data": self.data, "machine": machine, "rows": rows, "runs": runs}
        atomic_write_text(self.out / "results.json", json.dumps(summary, indent=1))
        atomic_write_text(self.out / "results.csv", results_csv(runs))
        atomic_write_text(self.out / "results.md", results_markdown(self.grid, self.data, rows, processor))
        if rows:
            benchmark_figure(rows, self.out / "results.png")
        return runs


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def summary_row(row: Row, runs: list[dict]) -> dict:
    """Mean and sample standard deviation over a row's finished seeds, with the per-seed values."""
    runs = sorted(runs, key=lambda r: r["seed"])
    summary: dict[str, Any] = {"row": row.name, "settings": row.describe(), "seeds": [r["seed"] for r in runs]}
    if row.reference:
        summary["reference"] = row.reference
    if row.reference_auc is not None:
        summary["reference_auc"] = row.reference_auc
    if not runs:
        return summary
    for key in ("auc", "ap", "minutes", "training_tflop"):
        values = [r[key] for r in runs]
        summary[key], summary[f"{key}_sd"] = _mean_sd(values)
        summary[f"{key}_per_seed"] = values
    summary["chosen_iterations"] = [r["chosen_iteration"] for r in runs]
    return summary


def results_csv(runs: list[dict]) -> str:
    """One line per finished run."""
    columns = ["row", "seed", "auc", "ap", "chosen_iteration", "iterations", "training_tflop", "minutes"]
    columns += ["threads", "machine"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(runs)
    return buffer.getvalue()


def _pm(row: dict, key: str, digits: int) -> str:
    sd = row[f"{key}_sd"]
    return f"{row[key]:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")


def results_markdown(grid: Grid, data: str, rows: list[dict], machine: str) -> str:
    """The summary table: one line per row, mean ± sample sd over its finished seeds, and any reference figure."""
    referenced = any(row.get("reference") for row in rows)
    lines = [
        f"# {grid.description or grid.path.stem}",
        "",
        f"Grid `{grid.path}` on `{data}`; test split read once per run, after training. "
        f"{machine}, torch {torch.__version__}; minutes are this machine's, with the threads in results.csv.",
        "",
        "| row | settings | seeds | test AUC | test AP | AUC per seed | chosen iterations | TFLOP per run "
        "| minutes per run |" + (f" {grid.reference or 'reference'} |" if referenced else ""),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if referenced else ""),
    ]
    for row in rows:
        per_seed = ", ".join(f"{v:.3f}" for v in row["auc_per_seed"])
        lines.append(
            f"| {row['row']} | `{row['settings']}` | {len(row['seeds'])} | {_pm(row, 'auc', 3)} | {_pm(row, 'ap', 3)} "
            f"| {per_seed} | {', '.join(map(str, row['chosen_iterations']))} | {row['training_tflop']:.3g} "
            f"| {row['minutes']:.1f} |" + (f" {row.get('reference', '')} |" if referenced else "")
        )
    return "\n".join(lines) + "\n"
