"""`medsagan benchmark`: a grid of settings, each trained over several seeds, evaluated once, summarised.

A grid file names rows, each a preset and overrides laid over the grid's own. Every (row, seed) is an
ordinary run under OUT/<row>/seed<N>, trained, then evaluated once on the test split. A rerun skips what is
finished, resumes what was interrupted and trains what is new, and the summary (results.md, .csv, .json
and .png) is rewritten from the runs' own records every time.
"""

import csv
import io
import json
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from .compute import training_compute
from .config import PRESETS, Config, load_config, merge, parse_overrides, read_yaml
from .data.sources import open_source
from .devices import machine_name, resolve_device
from .errors import ConfigError, DataError
from .evaluate.results import evaluate_run, finished_evaluation
from .files import LockHeld, RunLock, atomic_write_text, check_output
from .runs import RunDir
from .train import fit
from .viz.plots import benchmark_figure, draw_curves

GRID_KEYS = ("description", "preset", "seeds", "overrides", "reference", "rows")
ROW_KEYS = ("name", "preset", "overrides", "reference")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
RECORD = "benchmark.json"


@dataclass(frozen=True)
class Row:
    """One row of the grid: a name, a preset and the overrides laid over it (nested, as in a config file)."""

    name: str
    preset: str
    overrides: dict[str, Any]
    reference: str = ""  # a published figure to set beside the row's; it changes no run

    def to_dict(self) -> dict[str, Any]:
        """The row as benchmark.json keeps it, to tell a changed row from the same one on a rerun."""
        return {"preset": self.preset, "overrides": self.overrides}

    def describe(self) -> str:
        """The preset and the overrides as KEY=VALUE, one short line."""
        flat = _flatten(self.overrides)
        return " ".join([self.preset, *(f"{k}={v}" for k, v in flat.items())])


@dataclass(frozen=True)
class Grid:
    """A grid file read and checked: its rows in order and the seeds each row runs."""

    path: Path
    description: str
    rows: tuple[Row, ...]
    seeds: tuple[int, ...]
    reference: str = ""  # the heading of the rows' reference figures, such as "paper, RSNA (AUC / AP %)"


def _flatten(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _overrides(value: Any, where: str) -> dict[str, Any]:
    """A mapping of sections (as in a config file) or a list of KEY=VALUE strings, as nested overrides."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        try:
            return parse_overrides(value)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
    raise ConfigError(f"{where}: overrides must be a mapping of sections or a list of KEY=VALUE strings")


def parse_seeds(value: Any, where: str) -> tuple[int, ...]:
    """Seeds as a list of distinct whole numbers >= 0 (a list, or a string such as "0,1,2" or "0 1 2")."""
    items = re.split(r"[,\s]+", value.strip()) if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(f"{where}: give one or more seeds, for example 0,1,2")
    seeds = []
    for item in items:
        try:
            seed = int(item)
        except (TypeError, ValueError):
            seed = -1
        if seed < 0 or str(seed) != str(item).strip():
            raise ConfigError(f"{where}: seed {item!r} is not a whole number >= 0")
        seeds.append(seed)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: seed {next(s for s in seeds if seeds.count(s) > 1)} is given twice")
    return tuple(seeds)


def read_grid(path: str | Path, seeds: tuple[int, ...] | None = None, only: tuple[str, ...] = ()) -> Grid:
    """The grid file at `path`, every row checked by name; `seeds` replaces the file's (default 0, 1, 2).

    `only` keeps the rows of those names, in the grid's order: a share of a grid to train, or the finished
    rows to tabulate.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--grid {path} does not exist; give a grid file (configs/benchmarks/ has two)")
    values = read_yaml(path)
    for key in values:
        if key not in GRID_KEYS:
            raise ConfigError(f"{path}: unknown key {key!r}; a grid has {', '.join(GRID_KEYS)}")
    default_preset = values.get("preset", "fast")
    common = _overrides(values.get("overrides"), f"{path}: overrides")
    rows_given = values.get("rows")
    if not isinstance(rows_given, list) or not rows_given:
        raise ConfigError(f"{path}: give a list of rows, each with a name (rows: [{{name: sagan}}, ...])")
    rows, seen = [], set()
    for index, given in enumerate(rows_given, 1):
        if not isinstance(given, dict) or not given.get("name"):
            raise ConfigError(f"{path}: row {index} has no name; give each row a name (name: sagan)")
        name = str(given["name"])
        where = f"{path}: row {name!r}"
        if not NAME.match(name):
            raise ConfigError(
                f"{where}: a name is letters, digits and . _ + - (at most 64), starting with one of the first two"
            )
        if name in seen:
            raise ConfigError(f"{where}: the name is used twice; give each row its own")
        seen.add(name)
        for key in given:
            if key not in ROW_KEYS:
                raise ConfigError(f"{where}: unknown key {key!r}; a row has {', '.join(ROW_KEYS)}")
        preset = str(given.get("preset", default_preset))
        if preset not in PRESETS:
            raise ConfigError(f"{where}: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        overrides = merge(common, _overrides(given.get("overrides"), where))
        rows.append(Row(name, preset, overrides, str(given.get("reference", ""))))
    unknown = [name for name in only if name not in seen]
    if unknown:
        raise ConfigError(
            f"--rows: {unknown[0]!r} is not a row of {path}; its rows are {', '.join(r.name for r in rows)}"
        )
    rows = [row for row in rows if not only or row.name in only]
    chosen = seeds if seeds is not None else parse_seeds(values.get("seeds", [0, 1, 2]), f"{path}: seeds")
    return Grid(path, str(values.get("description", "")), tuple(rows), tuple(chosen), str(values.get("reference", "")))


def row_config(grid: Grid, row: Row, data: str, seed: int) -> Config:
    """The run config of one (row, seed): the row's preset and overrides, the data and the seed."""
    if "seed" in row.overrides.get("train", {}) or "path" in row.overrides.get("data", {}):
        raise ConfigError(f"{grid.path}: row {row.name!r}: train.seed and data.path come from the command, not a row")
    try:
        return load_config(
            overrides=merge(row.overrides, {"data": {"path": data}, "train": {"seed": seed}}), preset=row.preset
        )
    except ConfigError as err:
        raise ConfigError(f"{grid.path}: row {row.name!r}: {err}") from None


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
        jobs: int = 1,
        planned: list[tuple[Row, int, Config]] | None = None,
    ) -> list[dict]:
        """Train and evaluate every (row, seed) not finished yet, then write the summary; its per-run rows.

        `progress` shows each training's progress bar (on stderr), as `medsagan train` does. `jobs` > 1: the
        caller started the other jobs and waits for them, so runs they hold need no rerun to be tabulated.
        `planned`: what `prepare` returned, when the caller had to mark OUT before starting them.
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
        if left and jobs > 1:
            say(f"{left} of {len(planned)} runs left to the other jobs; waiting for them")
        elif left:
            say(f"{left} of {len(planned)} runs left to other processes; run this again after them for the whole table")
        return self.summarise()

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


def grid_yaml(grid: Grid) -> str:
    """The grid as read (rows with their merged overrides), for --dry-run."""
    rows = [{"name": r.name, "preset": r.preset, "overrides": r.overrides} for r in grid.rows]
    return yaml.safe_dump({"seeds": list(grid.seeds), "rows": rows}, sort_keys=False)
