"""A training time budget: measure this machine's speed on the run's own data, then fix the iterations.

`train.time_budget=30m` makes a new run time a few iterations of a throw-away copy of its networks (the
run's random streams are put back afterwards, so the run itself is the one a fixed `train.iterations` would
give), add the measured cost of validations, checkpoints and the final calibration, and choose the number of
iterations whose learning-rate decay ends inside the budget. The run saves that number in config.yaml with
the budget cleared, and the measurement in RUN/budget.json, so a resume or a rerun of the saved config is
exact and never re-measures.
"""

import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from .errors import ConfigError

DURATION = re.compile(r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m(?:in)?)?(?:(?P<s>\d+(?:\.\d+)?)s)?$")
# The share of the budget left unplanned: the loop's logging and a machine's drift cost a few per cent.
MARGIN = 0.08
# The probe times at least this many n_critic cycles, and stops after this share of the budget (or 30 s).
PROBE_CYCLES = (4, 100)
PROBE_SHARE = 0.03


def parse_duration(text: str, key: str = "train.time_budget") -> float:
    """Seconds in "30m", "1h", "1h30m", "90s" or "45" (minutes); ConfigError naming `key` otherwise."""
    cleaned = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        seconds = float(cleaned) * 60
    else:
        match = DURATION.fullmatch(cleaned) if cleaned else None
        if not match or not any(match.groupdict().values()):
            raise ConfigError(f"{key} = {text!r} is not a duration; write it like 30m, 1h, 1h30m or 90s")
        parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
        seconds = 3600 * parts["h"] + 60 * parts["m"] + parts["s"]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{key} = {text!r} must be a positive duration, for example 30m")
    return seconds


@dataclass(frozen=True)
class Measurement:
    """What the probe measured on this machine, in seconds."""

    per_iteration: float
    per_validation: float
    per_checkpoint: float
    timed_iterations: int


@dataclass(frozen=True)
class Plan:
    """The iterations a budget allows, and how they were worked out (saved as RUN/budget.json)."""

    time_budget: str
    budget_seconds: float
    seconds_before_training: float
    measurement: Measurement
    iterations: int

    def to_dict(self) -> dict:
        """Plain values for JSON."""
        return asdict(self)

    def describe(self) -> str:
        """One line for the user."""
        m = self.measurement
        return (
            f"time budget {self.time_budget}: {self.iterations} iterations at {m.per_iteration:.3f} s each "
            f"(measured over {m.timed_iterations}), validation {m.per_validation:.2f} s, checkpoint "
            f"{m.per_checkpoint:.2f} s, {self.seconds_before_training:.0f} s already spent"
        )


def measure(
    iterate: Callable[[int], object],
    validate: Callable[[], object],
    save: Callable[[], object],
    n_critic: int,
    budget_seconds: float,
    sync: Callable[[], None] = lambda: None,
) -> Measurement:
    """Time `iterate(step)` over whole n_critic cycles after one untimed cycle, one `validate()` and one `save()`.

    A validation may also save the best weights, so it is charged a save as well.
    """
    for step in range(1, n_critic + 1):
        iterate(step)
    sync()
    limit = min(PROBE_SHARE * budget_seconds, 30.0)
    least, most = PROBE_CYCLES
    begin, step, cycles = time.perf_counter(), n_critic, 0
    while cycles < most and (cycles < least or time.perf_counter() - begin < limit):
        for _ in range(n_critic):
            step += 1
            iterate(step)
        cycles += 1
        sync()
    per_iteration = (time.perf_counter() - begin) / (cycles * n_critic)
    begin = time.perf_counter()
    validate()
    per_validation = time.perf_counter() - begin
    begin = time.perf_counter()
    save()
    per_checkpoint = time.perf_counter() - begin
    return Measurement(per_iteration, per_validation + per_checkpoint, per_checkpoint, cycles * n_critic)


def plan(
    time_budget: str, spent: float, measured: Measurement, validate_every: int, checkpoint_every: int, n_critic: int
) -> Plan:
    """The most iterations (whole n_critic cycles) that fit the budget left after `spent` seconds."""
    budget = parse_duration(time_budget)
    left = budget * (1 - MARGIN) - spent - measured.per_validation  # the final calibration scores as much
    per_iteration = (
        measured.per_iteration + measured.per_validation / validate_every + measured.per_checkpoint / checkpoint_every
    )
    iterations = int(max(left, 0) / per_iteration) // n_critic * n_critic
    if iterations < n_critic:
        raise ConfigError(
            f"train.time_budget = {time_budget} leaves no time to train: {spent:.0f} s went to loading the data and "
            f"measuring, and one iteration takes {per_iteration:.2f} s here; give a longer budget or set "
            "train.iterations instead"
        )
    return Plan(time_budget, budget, spent, measured, iterations)
