"""The training loop: the paper's schedule, selection on validation data, exact resume.

The objective lives in losses.SAGANLoss; this module owns the schedule: which step runs when, what is logged,
validated and checkpointed, and how a stopped run continues.
"""

import copy
import json
import logging
import shutil
from contextlib import ExitStack, nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import restore_rng, rng_states
from .config import Config, TrainConfig, decay_window, selection_start
from .data.dataset import TrainingData, build_training_data, to_model_range
from .data.sampler import PairSampler
from .data.sources import open_source
from .devices import resolve_device, resolve_precision
from .distributed import SINGLE, World, check_batch, local_device, start, stop, world_from_env
from .errors import MedsaganError, RunError
from .evaluate.calibration import calibrate
from .evaluate.selection import DESCRIPTIONS, validation_metric
from .files import RunLock, atomic_write_text, load_tensors
from .losses import Batch, SAGANLoss
from .models import AnomalyDetector, build_critic, build_generator
from .runs import RunDir, Selection
from .training_log import Meter, truncate_log, write_record

log = logging.getLogger("medsagan")

# The average's half-life is at most this share of the images seen so far, so the random initial weights
# leave it early in the run (StyleGAN2-ADA's ema_rampup, Karras et al. 2020).
EMA_RAMPUP = 0.1


def lr_factor(cfg: TrainConfig):
    """Multiplier of the base learning rate after `step` iterations."""
    start, decay = decay_window(cfg)

    def factor(step: int) -> float:
        if cfg.lr_schedule == "linear" and step > start:
            return max(0.0, 1.0 - (step - start) / decay)
        if cfg.lr_schedule == "official" and step > start:
            # StarGAN lineage: lr -= lr0 / num_iters_decay every 1000 iterations, which ends at 0.999 * lr0.
            return max(0.0, 1.0 - ((step - start) // 1000) / decay)
        return 1.0

    return factor


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def data_summary(data: TrainingData, source_text: str) -> dict:
    """RUN/data.json: what the run trained and selects on."""
    count = lambda s, label: int((s.labels == label).sum()) if s is not None else 0  # noqa: E731
    return {
        "source": source_text,
        "labelled_normals": len(data.normal),
        "unlabeled": {
            "normal": count(data.unlabeled, 0),
            "abnormal": count(data.unlabeled, 1),
            "unknown": count(data.unlabeled, -1),
        },
        "validation": {
            "kind": data.validation,
            "selection": DESCRIPTIONS[data.validation],
            "normal": len(data.val_normal) if data.val_normal else 0,
            "positive": len(data.val_positive) if data.val_positive else 0,
        },
        "skipped_images": data.skipped,
    }


class Trainer:
    """The networks, optimisers, sampler and objective of one run, and one iteration of the paper's schedule.

    `iteration(step)` is what the loop and benchmarks/speed.py both run: a critic step every iteration, a
    generator step every n_critic-th. Under torchrun every rank draws the same global batch and computes its
    slice of it (see distributed.py).
    """

    def __init__(
        self,
        cfg: Config,
        device: torch.device,
        normal_images: torch.Tensor,
        unlabeled_images: torch.Tensor,
        world: World = SINGLE,
    ):
        t = cfg.train
        self.cfg, self.device, self.world = cfg, device, world
        self.normal_images, self.unlabeled_images = normal_images.to(device), unlabeled_images.to(device)
        self.generator = build_generator(cfg.model).to(device)
        self.critic = build_critic(cfg.model).to(device)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), t.lr_g, betas=(t.beta1, t.beta2))
        self.opt_d = torch.optim.Adam(self.critic.parameters(), t.lr_d, betas=(t.beta1, t.beta2))
        self.schedule = lr_factor(t)
        self.rngs = {
            "data": torch.Generator().manual_seed(t.seed),
            "loss": torch.Generator(device).manual_seed(t.seed + 1),
        }
        self.sampler = PairSampler(
            len(normal_images), len(unlabeled_images), t.batch_size, cfg.data.fixed_pairing, self.rngs["data"]
        )
        self.objective = SAGANLoss(self.generator, self.critic, cfg.loss, self.rngs["loss"])
        bfloat16 = resolve_precision(t.precision, device) == "bfloat16"
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bfloat16)
        self.ema = copy.deepcopy(self.generator).requires_grad_(False).eval() if t.ema_half_life else None
        if t.compile:
            self.objective.generator = torch.compile(self.generator)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: the fastest kernels are found once

    @property
    def scored_generator(self) -> torch.nn.Module:
        """The generator that validation, selection and scoring use: the moving average when there is one."""
        return self.ema if self.ema is not None else self.generator

    def next_batch(self, step: int) -> Batch:
        """Set the learning rates of `step` and draw its batch (this process's slice of it)."""
        t = self.cfg.train
        for optimizer, base in ((self.opt_g, t.lr_g), (self.opt_d, t.lr_d)):
            set_lr(optimizer, base * self.schedule(step - 1))
        normal_index, unlabeled_index, source_index = (i.to(self.device) for i in self.sampler.next())
        with self.autocast:
            return self.objective.make_batch(
                to_model_range(self.normal_images[normal_index]),
                to_model_range(self.unlabeled_images[unlabeled_index]),
                to_model_range(self.normal_images[source_index]),
            ).shard(self.world)

    def iteration(self, step: int) -> dict[str, torch.Tensor]:
        """One critic update, and a generator update when step is a multiple of n_critic; the loss tensors."""
        t = self.cfg.train
        batch = self.next_batch(step)
        generator_turn = step % t.n_critic == 0
        restored = None
        if generator_turn and t.reuse_restoration:
            with self.autocast:
                restored = self.objective.restorations(batch)
        fake = restored[0].detach() if restored is not None else None
        stats = critic_step(self.objective, self.opt_d, batch, self.autocast, self.world, fake)
        if generator_turn:
            stats.update(generator_step(self.objective, self.opt_g, batch, self.autocast, self.world, restored))
            self._update_ema(step)
        return stats

    def _update_ema(self, step: int) -> None:
        """Move the average towards the generator; its half-life in images, ramped up early in the run."""
        if self.ema is None:
            return
        t = self.cfg.train
        seen = (step // t.n_critic) * t.batch_size
        half_life = min(t.ema_half_life, EMA_RAMPUP * seen)
        weight = 1.0 - 0.5 ** (t.batch_size / max(half_life, 1e-8))
        with torch.no_grad():
            for average, current in zip(self.ema.parameters(), self.generator.parameters(), strict=True):
                average.lerp_(current, weight)

    def state_dict(self) -> dict:
        """Networks, optimisers, the sampler's place and the random streams."""
        return {
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rng_states(self.rngs),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where `state_dict()` was taken."""
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        for module, key in ((self.opt_g, "opt_g"), (self.opt_d, "opt_d"), (self.sampler, "sampler")):
            module.load_state_dict(state[key])
        restore_rng(state["rng"], self.rngs)
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


def open_run(run: RunDir, cfg: Config, resume: bool) -> dict | None:
    """Check the run folder and write its config; the training state to resume from (None: iteration 0).

    The caller holds the run's lock. A fresh run needs an empty folder; a resumed one may have stopped before
    its first checkpoint (it then starts at iteration 0) but may not be shortened below what it has done.
    """
    if not resume:
        if any(p.name != RunLock.NAME for p in run.path.iterdir()):
            raise RunError(f"{run}: already holds a run; continue it with --resume {run} or choose another --out")
        cfg.save(run.config)
        return None
    state = run.latest_state()
    done = int(state["iteration"]) if state else 0
    if done > cfg.train.iterations:
        raise RunError(f"{run}: the run has already done {done} iterations; resume it with --iterations {done} or more")
    for leftover in run.path.rglob(".*.tmp"):
        leftover.unlink()  # the unfinished write of a killed run; the file it was replacing is intact
    run.calibration.unlink(missing_ok=True)  # refitted at the end; never paired with newer weights
    cfg.save(run.config)  # resuming may extend train.iterations
    return state


def fit(cfg: Config, run_dir: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Train SAGAN as `cfg` says and write the run to `run_dir`; `resume=True` continues a stopped run.

    One process at a time writes a run: the folder is locked for the whole of training and calibration.
    Under torchrun, rank 0 opens and writes the run and the others follow (distributed.py).
    """
    run, world = RunDir(run_dir), world_from_env()
    cfg = cfg.with_absolute_paths().fixed_schedule()  # decay in iterations: a later --resume keeps it
    check_batch(world, cfg.train.batch_size)
    device = local_device(resolve_device(cfg.train.device), world)  # refused before any folder is made
    # What "auto" chose is saved, so a resumed run keeps its precision on whatever machine it continues.
    cfg = cfg.replace(train={"precision": resolve_precision(cfg.train.precision, device)})
    start(world, device)
    try:
        with ExitStack() as held:
            state, created, failure = None, False, None
            if world.is_main:
                try:
                    state, created = _open(run, cfg, resume, held)
                except MedsaganError as err:
                    failure = err
            # Every rank learns whether rank 0 opened the run, and from which iteration it continues.
            begun = world.broadcast(str(failure) if failure else int(state["iteration"]) if state else 0)
            if failure:
                raise failure
            if isinstance(begun, str):
                raise RunError(f"rank {world.rank}: rank 0 could not open the run: {begun}")
            if not world.is_main and begun:
                state = load_tensors(run.state_path(begun), "medsagan training checkpoint")
            try:
                _train(cfg, run, state, progress and world.is_main, world, device)
            except Exception:
                if world.is_main and not resume and not run.states():
                    _remove_failed_start(run.path, created)
                raise
    finally:
        stop(world)
    return run.path


def _open(run: RunDir, cfg: Config, resume: bool, held: ExitStack) -> tuple[dict | None, bool]:
    """Lock the run folder (held until `held` closes) and open it; (state to resume from, folder created)."""
    if resume and not run.config.is_file():
        raise RunError(f"{run}: nothing to resume (no config.yaml); start it with `medsagan train --out {run}`")
    created = not run.path.exists()
    held.enter_context(run.lock())
    return open_run(run, cfg, resume), created


def _remove_failed_start(run_dir: Path, created: bool) -> None:
    """A fresh run that failed before its first checkpoint leaves nothing behind, so it can simply be rerun."""
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for entry in run_dir.iterdir():  # the folder was empty when the run started
        if entry.name != RunLock.NAME:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _train(cfg: Config, run: RunDir, state: dict | None, progress: bool, world: World, device: torch.device) -> None:
    t = cfg.train
    main = world.is_main
    torch.manual_seed(t.seed)

    # Load the training pools and the validation data; the test set is never read here.
    source = open_source(cfg)
    if not main:
        world.broadcast(None)  # wait for rank 0 to decode and cache the images, then read its cache
    data = build_training_data(source, cfg, run.cache_dir(cfg))
    if main:
        world.broadcast(None)
        atomic_write_text(run.data, json.dumps(data_summary(data, source.describe()), indent=1))
        run.save_digests(data.digests())

    # Build the networks, their optimisers, the sampler and the objective (the same on every rank).
    trainer = Trainer(cfg, device, data.normal.images, data.unlabeled.images, world)
    detector = AnomalyDetector(trainer.scored_generator)
    description, select_from = DESCRIPTIONS[data.validation], selection_start(cfg)
    if select_from > 0:
        description = f"{description}; among the checkpoints from iteration {select_from}"

    # Resume: weights, optimisers, schedules, the sampler's place and every random stream.
    start_at, best, best_weights = 0, Selection(0, None, None, description), {}
    if state is not None:
        trainer.load_state_dict(state)
        start_at, best_weights = int(state["iteration"]), state["best_generator"]
        best = Selection.from_dict({"selection": description, **state["best"]})
        if main and best_weights:
            run.save_best(best_weights, best)  # best.pt as it was at this checkpoint
        elif main:
            run.best.unlink(missing_ok=True)
        if main:
            log.info("resuming %s at iteration %d", run, start_at)
    elif main:
        run.best.unlink(missing_ok=True)
    if world.rank:
        # The generator's mask draws from torch's global stream: each rank its own, derived from seed and rank.
        torch.manual_seed(int(np.random.SeedSequence([t.seed, world.rank, start_at]).generate_state(1)[0]))
    if main:
        truncate_log(run.log, start_at)  # records after the checkpoint (or all, from 0) would be logged twice

    # Train: the critic every iteration, the generator every n_critic iterations.
    trainer.generator.train()
    trainer.critic.train()
    meter = Meter()
    bar = tqdm(total=t.iterations, initial=start_at, disable=not progress, unit="it", dynamic_ncols=True)
    with open(run.log, "a") if main else nullcontext() as log_file:
        for step in range(start_at + 1, t.iterations + 1):
            meter.add(trainer.iteration(step), t.batch_size)
            bar.update(1)
            last = step == t.iterations

            # Log the mean losses of the window (over every rank) and the throughput.
            if step % t.log_every == 0 or last:
                record = {"iteration": step, **world.mean(meter.flush()), "lr_g": trainer.opt_g.param_groups[0]["lr"]}
                if main:
                    write_record(log_file, record)
                shown = {"D/loss": "D", "G/loss": "G", "G/identity": "id", "G/restoration": "rec"}
                postfix = {short: f"{record[key]:.3f}" for key, short in shown.items() if key in record}
                bar.set_postfix({**postfix, "img/s": f"{record['images_per_s']:.0f}"})

            # Validate (rank 0) and keep the best generator by the validation metric, from select_from on.
            if main and (step % t.validate_every == 0 or last):
                result = validation_metric(detector, data)
                eligible = step >= select_from
                if eligible and (result is None or best.value is None or result[1] > best.value):
                    best = Selection(step, result and result[0], result and result[1], description)
                    best_weights = {k: v.detach().clone() for k, v in trainer.scored_generator.state_dict().items()}
                    run.save_best(best_weights, best)
                if result is not None:
                    write_record(log_file, {"iteration": step, result[0]: result[1], "best_iteration": best.iteration})

            # Checkpoint the whole training state (rank 0), the best weights so far included.
            if main and (step % t.checkpoint_every == 0 or last):
                snapshot = {"iteration": step, **trainer.state_dict(), "best": best.to_dict()}
                run.save_state(step, {**snapshot, "best_generator": best_weights}, t.keep_checkpoints)
    bar.close()

    # Done: calibrate the threshold and heatmap scale with the selected generator.
    if main:
        chosen = AnomalyDetector(build_generator(cfg.model).to(device))
        chosen.generator.load_state_dict(best_weights)
        run.save_calibration(calibrate(chosen, data, cfg.evaluation, best))


def critic_step(
    objective: SAGANLoss, optimizer, batch, autocast, world: World = SINGLE, fake: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """One critic update on `batch` (gradients averaged over the ranks); the loss tensors."""
    with autocast:
        loss, stats = objective.critic_loss(batch, fake)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    world.average_gradients(objective.critic)
    optimizer.step()
    return stats


def generator_step(
    objective: SAGANLoss, optimizer, batch, autocast, world: World = SINGLE, restored=None
) -> dict[str, torch.Tensor]:
    """One generator update; the critic's weights are frozen so no gradient is spent on them."""
    objective.critic.requires_grad_(False)
    with autocast:
        loss, stats = objective.generator_loss(batch, restored)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    world.average_gradients(objective.generator)
    optimizer.step()
    objective.critic.requires_grad_(True)
    return stats
