"""The benchmarks' measuring code (not their timings): FLOP counts, the official-schedule reference, output."""

import json
import subprocess
import sys
from pathlib import Path

import torch

from medsagan.config import load_config
from medsagan.models import build_generator
from medsagan.models.summary import describe

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import speed  # noqa: E402


def test_counted_generator_flops_agree_with_the_layer_table():
    cfg = load_config(preset="fast")
    generator = build_generator(cfg.model).eval()
    with speed.FlopCounter() as counter, torch.no_grad():
        generator(torch.zeros(1, 1, 64, 64))
    # Two FLOPs per multiply-add; the layer table counts the convolutions, which are nearly all of it.
    table = 2e9 * describe(cfg.model)["generator_gmacs_per_image"]
    assert abs(counter.total - table) / table < 0.01


def test_official_schedule_reference_updates_both_networks_like_the_training_step():
    cfg = load_config(preset="fast", overrides={"train": {"batch_size": 4}})
    trainer = speed.make_trainer(cfg, torch.device("cpu"), speed.SINGLE)
    generator = [p.clone() for p in trainer.generator.parameters()]
    critic = [p.clone() for p in trainer.critic.parameters()]
    speed.official_iteration(trainer, 1)  # critic only
    assert all(torch.equal(a, b) for a, b in zip(generator, trainer.generator.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(critic, trainer.critic.parameters(), strict=True))
    speed.official_iteration(trainer, 2)
    assert not all(torch.equal(a, b) for a, b in zip(generator, trainer.generator.parameters(), strict=True))
    # An iteration with a generator step costs more than a critic-only one, and both are counted.
    assert speed.flops_per_iteration(trainer) > 0


def test_speed_benchmark_prints_every_figure(tmp_path):
    command = [sys.executable, str(BENCHMARKS / "speed.py"), "--presets", "fast", "--batch", "4", "--steps", "1"]
    command += ["--windows", "1", "--versus", "train.reuse_restoration=true", "--markdown"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[0])
    assert result["preset"] == "fast" and result["batch"] == 4 and result["precision"] == "float32"
    for key in ("peak_gflops", "gflop_per_iteration", "train_iterations_per_s", "score_images_per_s"):
        assert result[key] > 0, key
    assert 0 < result["percent_of_peak"] < 100
    assert result["speedup_over_official_schedule"] > 0 and result["versus_iterations_per_s"] > 0
    assert lines[1].startswith("| fast |") and lines[1].count("|") == 10
