"""The training loop: the paper's schedule, selection on validation data, exact resume."""

import json
import logging
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import latest_state, list_states, restore_rng, rng_states, save_state
from .config import Config, TrainConfig
from .data.dataset import TrainingData, build_training_data, to_model_range
from .data.sampler import PairSampler
from .data.sources import open_source
from .errors import RunError
from .evaluate.scoring import score_images
from .evaluate.selection import DESCRIPTIONS, validation_metric
from .evaluate.thresholds import normal_quantile, youden
from .files import RunLock, atomic_torch_save, atomic_write_text
from .losses import SAGANLoss
from .models import AnomalyDetector, build_critic, build_generator
from .runs import BEST, CALIBRATION, CONFIG, DATA, LOG, cache_dir, resolve_device

log = logging.getLogger("medsagan")


def lr_factor(cfg: TrainConfig):
    """Multiplier of the base learning rate after `step` iterations."""
    decay = max(1, cfg.iterations - cfg.lr_decay_start)

    def factor(step: int) -> float:
        if cfg.lr_schedule == "linear" and step > cfg.lr_decay_start:
            return max(0.0, 1.0 - (step - cfg.lr_decay_start) / decay)
        if cfg.lr_schedule == "official" and step > cfg.lr_decay_start:
            # StarGAN lineage: lr -= lr0 / num_iters_decay every 1000 iterations, which ends at 0.999 * lr0.
            return 1.0 - ((step - cfg.lr_decay_start) // 1000) / decay
        return 1.0

    return factor


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def data_summary(data: TrainingData, source_text: str) -> dict:
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


def open_run(run_dir: Path, cfg: Config, resume: bool) -> dict | None:
    """Check the run folder and write its config; the training state to resume from (None: iteration 0).

    The caller holds the run's lock. A fresh run needs an empty folder; a resumed one may have stopped before
    its first checkpoint (it then starts at iteration 0) but may not be shortened below what it has done.
    """
    if not resume:
        if any(p.name != RunLock.NAME for p in run_dir.iterdir()):
            raise RunError(
                f"{run_dir}: already holds a run; continue it with --resume {run_dir} or choose another --out"
            )
        cfg.save(run_dir / CONFIG)
        return None
    state = latest_state(run_dir)
    done = int(state["iteration"]) if state else 0
    if done > cfg.train.iterations:
        raise RunError(
            f"{run_dir}: the run has already done {done} iterations; resume it with --iterations {done} or more"
        )
    for leftover in run_dir.rglob(".*.tmp"):
        leftover.unlink()  # the unfinished write of a killed run; the file it was replacing is intact
    (run_dir / CALIBRATION).unlink(missing_ok=True)  # refitted at the end; never paired with newer weights
    cfg.save(run_dir / CONFIG)  # resuming may extend train.iterations
    return state


def calibrate(detector: AnomalyDetector, data: TrainingData, cfg: TrainConfig, record: dict) -> dict:
    """Threshold and heatmap scale from validation data (training normals when there is none)."""
    normals = data.val_normal if data.val_normal is not None else data.normal
    fitted_on = "held-out labelled normals" if data.validation == "aucp" else "labelled validation split"
    if data.validation == "none":
        fitted_on = "training normals (no validation data)"
    scored = score_images(detector, normals.images, keep_maps=True)
    if data.validation == "labelled":
        positive = score_images(detector, data.val_positive.images).scores
        threshold = youden(scored.scores, positive, fitted_on)
    else:
        threshold = normal_quantile(scored.scores, cfg.threshold_specificity, fitted_on)
    scale = float(np.quantile(scored.maps, 0.999))
    return {
        "threshold": threshold.to_dict(),
        "heatmap_scale": {"vmax": scale, "rule": f"99.9th percentile of anomaly-map pixels of the {fitted_on}"},
        "selection": record,
    }


def fit(cfg: Config, run_dir: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Train SAGAN as `cfg` says and write the run to `run_dir`; `resume=True` continues a stopped run.

    One process at a time writes a run: the folder is locked for the whole of training and calibration.
    """
    run_dir = Path(run_dir)
    cfg = cfg.with_absolute_paths()
    if resume and not (run_dir / CONFIG).is_file():
        raise RunError(f"{run_dir}: nothing to resume (no {CONFIG}); start it with `medsagan train --out {run_dir}`")
    resolve_device(cfg.train.device)  # a device this machine lacks is refused before any folder is made
    created = not run_dir.exists()
    with RunLock(run_dir):
        state = open_run(run_dir, cfg, resume)
        try:
            _train(cfg, run_dir, state, progress)
        except Exception:
            if not resume and not list_states(run_dir):
                _remove_failed_start(run_dir, created)
            raise
    return run_dir


def _remove_failed_start(run_dir: Path, created: bool) -> None:
    """A fresh run that failed before its first checkpoint leaves nothing behind, so it can simply be rerun."""
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for entry in run_dir.iterdir():  # the folder was empty when the run started
        if entry.name != RunLock.NAME:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _train(cfg: Config, run_dir: Path, state: dict | None, progress: bool) -> None:
    t = cfg.train
    device = resolve_device(t.device)
    torch.manual_seed(t.seed)

    # Load the training pools and the validation data; the test set is never read here.
    source = open_source(
        cfg.data.path, cfg.data.source, cfg.data.medmnist_task, cfg.data.synthetic_count, cfg.model.image_size
    )
    data = build_training_data(source, cfg.data, cfg.model, t.seed, t.val_max_images, cache_dir(cfg, run_dir))
    atomic_write_text(run_dir / DATA, json.dumps(data_summary(data, source.describe()), indent=1))
    normal_images, unlabeled_images = data.normal.images.to(device), data.unlabeled.images.to(device)

    # Build the networks, their optimisers and the objective.
    generator, critic = build_generator(cfg.model).to(device), build_critic(cfg.model).to(device)
    detector = AnomalyDetector(generator)
    opt_g = torch.optim.Adam(generator.parameters(), t.lr_g, betas=(t.beta1, t.beta2))
    opt_d = torch.optim.Adam(critic.parameters(), t.lr_d, betas=(t.beta1, t.beta2))
    schedule = lr_factor(t)
    data_rng = torch.Generator().manual_seed(t.seed)
    loss_rng = torch.Generator(device).manual_seed(t.seed + 1)
    sampler = PairSampler(len(data.normal), len(data.unlabeled), t.batch_size, cfg.data.fixed_pairing, data_rng)
    objective = SAGANLoss(generator, critic, cfg.loss, loss_rng)
    rngs = {"data": data_rng, "loss": loss_rng}

    # Resume: weights, optimisers, schedules, the sampler's place and every random stream.
    start, best, best_weights = 0, {"iteration": 0, "metric": None, "value": None}, {}
    if state is not None:
        generator.load_state_dict(state["generator"])
        critic.load_state_dict(state["critic"])
        for module, key in ((opt_g, "opt_g"), (opt_d, "opt_d"), (sampler, "sampler")):
            module.load_state_dict(state[key])
        restore_rng(state["rng"], rngs)
        start, best, best_weights = int(state["iteration"]), state["best"], state["best_generator"]
        if best_weights:
            save_best(run_dir, best_weights, best, data.validation)  # best.pt as it was at this checkpoint
        else:
            (run_dir / BEST).unlink(missing_ok=True)
        _truncate_log(run_dir / LOG, start)
        log.info("resuming %s at iteration %d", run_dir, start)
    else:
        _truncate_log(run_dir / LOG, 0)  # a run stopped before its first checkpoint starts again from 0
        (run_dir / BEST).unlink(missing_ok=True)

    # Train: the critic every iteration, the generator every n_critic iterations.
    generator.train()
    critic.train()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.amp)
    meter = Meter()
    bar = tqdm(total=t.iterations, initial=start, disable=not progress, unit="it", dynamic_ncols=True)
    with open(run_dir / LOG, "a") as log_file:
        for step in range(start + 1, t.iterations + 1):
            set_lr(opt_g, t.lr_g * schedule(step - 1))
            set_lr(opt_d, t.lr_d * schedule(step - 1))
            normal_index, unlabeled_index = sampler.next()
            with autocast:
                batch = objective.make_batch(
                    to_model_range(normal_images[normal_index.to(device)]),
                    to_model_range(unlabeled_images[unlabeled_index.to(device)]),
                )
            stats = critic_step(objective, opt_d, batch, autocast)
            if step % t.n_critic == 0:
                stats.update(generator_step(objective, opt_g, batch, autocast))
            meter.add(stats, t.batch_size)
            bar.update(1)
            last = step == t.iterations

            # Log the mean losses of the window and the throughput.
            if step % t.log_every == 0 or last:
                record = {"iteration": step, **meter.flush(), "lr_g": opt_g.param_groups[0]["lr"]}
                write_record(log_file, record)
                shown = {"D/loss": "D", "G/loss": "G", "G/identity": "id", "G/restoration": "rec"}
                postfix = {short: f"{record[key]:.3f}" for key, short in shown.items() if key in record}
                bar.set_postfix({**postfix, "img/s": f"{record['images_per_s']:.0f}"})

            # Validate and keep the best generator by the validation metric.
            if step % t.validate_every == 0 or last:
                result = validation_metric(detector, data)
                if result is None or best["value"] is None or result[1] > best["value"]:
                    best = {"iteration": step, "metric": result and result[0], "value": result and result[1]}
                    best_weights = {k: v.detach().clone() for k, v in generator.state_dict().items()}
                    save_best(run_dir, best_weights, best, data.validation)
                if result is not None:
                    write_record(
                        log_file, {"iteration": step, result[0]: result[1], "best_iteration": best["iteration"]}
                    )

            # Checkpoint the whole training state, the best weights so far included.
            if step % t.checkpoint_every == 0 or last:
                state = {
                    "iteration": step,
                    "generator": generator.state_dict(),
                    "critic": critic.state_dict(),
                    "opt_g": opt_g.state_dict(),
                    "opt_d": opt_d.state_dict(),
                    "sampler": sampler.state_dict(),
                    "rng": rng_states(rngs),
                    "best": best,
                    "best_generator": best_weights,
                }
                save_state(run_dir, step, state, t.keep_checkpoints)
    bar.close()

    # Done: calibrate the threshold and heatmap scale with the selected generator.
    chosen = AnomalyDetector(build_generator(cfg.model).to(device))
    chosen.generator.load_state_dict(best_weights)
    record = {**best, "selection": DESCRIPTIONS[data.validation]}
    atomic_write_text(run_dir / CALIBRATION, json.dumps(calibrate(chosen, data, t, record), indent=1))


def critic_step(objective: SAGANLoss, optimizer: torch.optim.Optimizer, batch, autocast) -> dict[str, torch.Tensor]:
    with autocast:
        loss, stats = objective.critic_loss(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return stats


def generator_step(objective: SAGANLoss, optimizer: torch.optim.Optimizer, batch, autocast) -> dict[str, torch.Tensor]:
    """One generator update; the critic's weights are frozen so no gradient is spent on them."""
    objective.critic.requires_grad_(False)
    with autocast:
        loss, stats = objective.generator_loss(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    objective.critic.requires_grad_(True)
    return stats


class Meter:
    """Mean of each loss over a logging window, and images per second."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.values, self.images, self.clock = defaultdict(list), 0, time.perf_counter()

    def add(self, stats: dict[str, torch.Tensor], images: int) -> None:
        for key, value in stats.items():
            self.values[key].append(value)
        self.images += images

    def flush(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.clock, 1e-9)
        # Losses stay tensors until here: no device synchronisation inside the training step.
        means = {k: torch.stack(v).float().mean().item() for k, v in self.values.items()}
        means["images_per_s"] = self.images / elapsed
        self.reset()
        return means


def write_record(log_file, record: dict) -> None:
    log_file.write(json.dumps(record) + "\n")
    log_file.flush()


def save_best(run_dir: Path, weights: dict, best: dict, validation: str) -> None:
    atomic_torch_save(run_dir / BEST, {"generator": weights, **best, "selection": DESCRIPTIONS[validation]})


def _truncate_log(path: Path, iteration: int) -> None:
    """Drop log records written after the checkpoint we resume from, so no iteration is logged twice.

    A torn line (the process was killed mid-write) is dropped too.
    """
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log.warning("warning: %s: dropped an incomplete log line left by an interrupted run", path)
            continue
        if isinstance(record, dict) and record.get("iteration", iteration + 1) <= iteration:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))
