"""Grid files of `medsagan benchmark`: rows, each a preset and overrides, and the seeds each row runs.

A grid names its rows, each a preset (default the grid's, else `fast`) and overrides laid over the grid's
own; every name, key and preset is checked before anything trains.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .config import PRESETS, Config, load_config, merge, parse_overrides, read_yaml
from .errors import ConfigError

GRID_KEYS = ("description", "preset", "seeds", "overrides", "reference", "rows")
ROW_KEYS = ("name", "preset", "overrides", "reference", "reference_auc")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


@dataclass(frozen=True)
class Row:
    """One row of the grid: a name, a preset and the overrides laid over it (nested, as in a config file)."""

    name: str
    preset: str
    overrides: dict[str, Any]
    reference: str = ""  # a published figure to set beside the row's; it changes no run
    reference_auc: float | None = None  # that figure's AUC in [0, 1], drawn beside the row's seeds

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


def _reference_auc(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{where}: reference_auc is {value!r}; give the published AUC as a fraction in [0, 1]")
    return float(value)


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
        reference_auc = _reference_auc(given.get("reference_auc"), where)
        rows.append(Row(name, preset, overrides, str(given.get("reference", "")), reference_auc))
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


def grid_yaml(grid: Grid) -> str:
    """The grid as read (rows with their merged overrides), for --dry-run."""
    rows = [{"name": r.name, "preset": r.preset, "overrides": r.overrides} for r in grid.rows]
    return yaml.safe_dump({"seeds": list(grid.seeds), "rows": rows}, sort_keys=False)
