"""`train.time_budget`: a short probe of the real networks on this machine sets a run's length.

budget.py holds the arithmetic (parsing, the measurement's timing, the plan); this module runs the probe
with the run's own data, networks and validation, and leaves no trace of it in the run that follows.
"""

import tempfile
import time
from pathlib import Path

import torch

from . import budget
from .config import Config
from .data.dataset import TrainingData, build_training_data
from .data.sources import open_source
from .devices import resolve_device, resolve_precision
from .distributed import World, world_from_env
from .evaluate.selection import pseudo_validation, validation_metric
from .files import atomic_torch_save
from .models import AnomalyDetector
from .trainer import Trainer


def resolve_time_budget(
    cfg: Config, data: TrainingData, device: torch.device, world: World, spent: float, scratch: Path | None = None
) -> tuple[Config, budget.Plan]:
    """The config with train.iterations set from a measurement of this machine and train.time_budget cleared.

    The probe's networks are thrown away and torch's global random stream put back, so the run that follows
    is the one its saved config reproduces.
    """
    t = cfg.train
    saved_rng = torch.get_rng_state()
    saved_cuda = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
    begin = time.perf_counter()
    probe = Trainer(cfg, device, data.normal.images, data.unlabeled.images, world)
    detector = AnomalyDetector(probe.scored_generator)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    pseudo = pseudo_validation(data, cfg) if world.is_main else None
    select_by = cfg.evaluation.select_by
    validate = (lambda: validation_metric(detector, data, select_by, pseudo)) if world.is_main else (lambda: None)
    probe.generator.train()
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".budget-") as folder:
        save = lambda: atomic_torch_save(Path(folder) / "probe.pt", probe.state_dict())  # noqa: E731
        seconds = budget.parse_duration(t.time_budget)
        measured = budget.measure(probe.iteration, validate, save, t.n_critic, seconds, sync)
    torch.set_rng_state(saved_rng)
    if saved_cuda is not None:
        torch.cuda.set_rng_state_all(saved_cuda)
    spent += time.perf_counter() - begin
    plan = budget.plan(t.time_budget, spent, measured, t.validate_every, t.checkpoint_every, t.n_critic)
    iterations = int(world.broadcast(plan.iterations))  # rank 0's measurement decides for every rank
    resolved = cfg.replace(train={"iterations": iterations, "time_budget": ""}).fixed_schedule()
    return resolved, plan


def plan_time_budget(cfg: Config, cache_dir: str | Path) -> budget.Plan:
    """What a run with this config's train.time_budget would choose here (`medsagan train --dry-run`)."""
    started = time.perf_counter()
    device = resolve_device(cfg.train.device)
    cfg = cfg.replace(train={"precision": resolve_precision(cfg.train.precision, device)})
    torch.manual_seed(cfg.train.seed)
    data = build_training_data(open_source(cfg), cfg, Path(cache_dir))
    return resolve_time_budget(cfg, data, device, world_from_env(), time.perf_counter() - started)[1]
