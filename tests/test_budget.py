import json
import time

import pytest
import torch
import yaml

from helpers import tiny_config
from medsagan.budget import MARGIN, Measurement, parse_duration, plan
from medsagan.errors import ConfigError
from medsagan.files import load_tensors
from medsagan.time_budget import plan_time_budget
from medsagan.train import fit


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("1h", 3600), ("1h30m", 5400), ("90s", 90), ("45", 2700), ("2min", 120)]
)
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "30x", "0m", "m", "-5m"])
def test_a_bad_budget_is_refused_when_the_config_is_built(text):
    with pytest.raises(ConfigError, match=r"train\.time_budget"):
        tiny_config(train={"time_budget": text})


def test_the_plan_fits_the_budget_with_its_overheads():
    measured = Measurement(per_iteration=0.5, per_validation=2.0, per_checkpoint=1.0, timed_iterations=20)
    chosen = plan("10m", spent=30.0, measured=measured, validate_every=100, checkpoint_every=50, n_critic=2)
    per_iteration = 0.5 + 2.0 / 100 + 1.0 / 50
    planned = chosen.iterations * per_iteration + 30.0 + 2.0
    assert chosen.iterations % 2 == 0
    assert planned <= 600 * (1 - MARGIN) < planned + 2 * per_iteration + 1e-9


def test_a_budget_too_short_to_train_says_so():
    measured = Measurement(per_iteration=5.0, per_validation=1.0, per_checkpoint=1.0, timed_iterations=4)
    with pytest.raises(ConfigError, match="leaves no time to train"):
        plan("10s", spent=8.0, measured=measured, validate_every=10, checkpoint_every=10, n_critic=2)


@pytest.mark.slow
def test_a_budgeted_run_ends_within_it_records_its_iterations_and_reruns_exactly(tmp_path):
    schedule = {"lr_schedule": "linear", "lr_decay_start": 0.5, "validate_every": 10, "checkpoint_every": 10}
    cfg = tiny_config(train={"time_budget": "20s", "iterations": 1, "log_every": 10, **schedule})
    begin = time.perf_counter()
    run = fit(cfg, tmp_path / "budget", progress=False)
    # The plan keeps 8 % in reserve for a machine alone. The bound is loose on purpose: it catches a plan that
    # ignores its probe (several times over) without failing when the load on a shared machine rises after
    # the probe, which made a 20 s run take 31 s once.
    assert time.perf_counter() - begin < 20 * 2.5
    saved = yaml.safe_load((run / "config.yaml").read_text())["train"]
    chosen = json.loads((run / "budget.json").read_text())
    assert saved["time_budget"] == "" and saved["iterations"] == chosen["iterations"] > 1
    assert saved["lr_decay_start"] == round(0.5 * saved["iterations"])  # the decay ends on time

    # The saved config trains the same weights again: the probe left every random stream as it found it.
    rerun = fit(tiny_config(**{"train": saved}), tmp_path / "rerun", progress=False)
    first, second = (load_tensors(r / "best.pt")["generator"] for r in (run, rerun))
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_the_dry_run_plan_matches_what_a_budget_allows(tmp_path):
    chosen = plan_time_budget(tiny_config(train={"time_budget": "20s"}), tmp_path / "cache")
    assert chosen.iterations > 0 and chosen.budget_seconds == 20
    assert "iterations at" in chosen.describe()


@pytest.mark.slow
def test_train_dry_run_says_what_a_budget_would_choose_and_writes_no_run(tmp_path):
    from click.testing import CliRunner

    from helpers import tiny_args
    from medsagan.cli import main

    out = tmp_path / "run"
    args = ["train", "--data", "synthetic", "--out", str(out), "--dry-run", *tiny_args(), "train.time_budget=30s"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "time budget 30s:" in result.output and "iterations at" in result.output
    assert not out.exists()
