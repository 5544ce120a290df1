"""Reading configuration values: KEY=VALUE overrides, YAML files, layering, and typed construction.

The plain mechanics under config.py, which holds what the keys are; nothing here knows a key but the ones that
moved or were replaced, so a saved run of an older version reads back.
"""

import contextlib
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError

BOUNDS = re.compile(r"^(?:(>=|>) (\S+)|([\[(])(\S+), (\S+)([\])]))$")


def key(default: Any, bounds: str = "", *, added: Any = dataclasses.MISSING) -> Any:
    """A configuration field with its default, its allowed range and when it was added.

    `bounds`: ">= 1", "> 0", "[0, 1)", "(0, 1]" and so on. `added`: for a key that runs saved before it existed
    lack, the value that reproduces what such a run did.
    """
    metadata = {"bounds": bounds} if bounds else {}
    if added is not dataclasses.MISSING:
        metadata["added"] = added
    return field(default=default, metadata=metadata)


def parse_bounds(text: str) -> tuple[float, float | None, bool, bool]:
    """Bounds as (low, high, low inclusive, high inclusive): "[0, 1)" -> (0, 1, True, False)."""
    match = BOUNDS.match(text)
    if match is None:
        raise ValueError(f"bounds {text!r} are not of the form '>= 1', '> 0' or '[0, 1)'")
    number = lambda text: int(float(text)) if float(text).is_integer() else float(text)  # noqa: E731
    if match.group(1):
        return number(match.group(2)), None, match.group(1) == ">=", True
    return number(match.group(4)), number(match.group(5)), match.group(3) == "[", match.group(6) == "]"


def range_text(low, high, low_in, high_in) -> str:
    """Bounds as a reader writes them: ">= 1", "in [0, 1)"."""
    if high is None:
        return f">= {low}" if low_in else f"> {low}"
    return f"in {'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}"


SCALARS = {bool: (bool,), int: (int,), float: (int, float), str: (str, int, float)}


def to_plain(value: Any) -> Any:
    """Tuples as lists, recursively, so a config dumps as plain YAML."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`["model.patches=4", "train.seed=1"]` -> nested dict; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {pair!r} is not key=value, for example train.iterations=500")
        node = nested
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {pair!r} sets both {part} and a key inside it")
        try:
            node[leaf] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            problem = yaml_problem(err)
            raise ConfigError(f"override {pair!r}: the value is not valid YAML ({problem}); put it in quotes") from None
    return nested


def yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's multi-line report as one phrase: what is wrong and where."""
    mark = getattr(err, "problem_mark", None)
    what = getattr(err, "problem", None) or str(err).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(err, "context", None)
    return f"{context}: {what}{where}" if context else f"{what}{where}"


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a mapping, with one clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file or drop --config")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {yaml_problem(err)}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections (model:, data:, ...)")
    return loaded


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`update` laid over `base`, section by section (nested dicts merge; anything else replaces)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# Keys that moved between sections; a saved run of an older version is read with them moved.
MOVED = {
    "train.threshold_specificity": "evaluation.threshold_specificity",
    "train.val_max_images": "evaluation.val_max_images",
}


# Keys replaced by another key: what an older saved run's value means in the new one.
REPLACED = {
    "train.amp": ("train.precision", lambda amp: "bfloat16" if amp else "float32"),
}


def build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """Instantiate dataclass `cls` from nested `values`, refusing unknown keys and wrong types by name."""
    known = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in values:
        if f"{prefix}{key}" in MOVED:
            raise ConfigError(f"{prefix}{key} has moved: set {MOVED[prefix + key]} instead")
        if f"{prefix}{key}" in REPLACED:
            new = REPLACED[prefix + key][0]
            raise ConfigError(f"{prefix}{key} was replaced by {new}: set {new}=bfloat16 (or float32, auto)")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else f"; valid keys: {', '.join(known)}"
            raise ConfigError(f"unknown config key {prefix}{key}{hint}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {prefix}{name} is a section; give it a mapping of keys")
            kwargs[name] = build(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(value, hint, f"{prefix}{name}")
    return cls(**kwargs)


def coerce(value: Any, hint: Any, key: str) -> Any:
    """`value` as type `hint` (YAML scalars are loose: 1e-4 may come as a string), or a ConfigError."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            shown = ", ".join(repr(a) if a == "" else str(a) for a in allowed)
            raise ConfigError(f"{key} = {value!r} is not one of {shown}")
        return value
    if origin is tuple:
        items = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(items):
            raise ConfigError(f"{key} takes a list of {len(items)} values, for example [0.05, 0.2]; got {value!r}")
        return tuple(coerce(v, t, key) for v, t in zip(value, items, strict=True))
    if origin in (typing.Union, types.UnionType):
        return coerce(value, next(a for a in typing.get_args(hint) if a is not type(None)), key)
    if hint in (int, float) and isinstance(value, str):
        # YAML reads 1e-4 (no dot) as a string; a number written that way is still a number.
        with contextlib.suppress(ValueError):
            value = float(value)
    if hint is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    accepted = SCALARS.get(hint, ())
    if isinstance(value, accepted) and (hint is bool or not isinstance(value, bool)):
        return hint(value)
    raise ConfigError(f"{key} must be {getattr(hint, '__name__', hint)}, got {value!r}")
