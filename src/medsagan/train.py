"""The training loop: the paper's schedule, selection on validation data, exact resume.

The objective lives in losses.SAGANLoss; this module owns the schedule: which step runs when, what is logged,
validated and checkpointed, and how a stopped run continues.
"""

import json
import logging
import shutil
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import Config, selection_start
from .data.dataset import TrainingData, build_training_data
from .data.sources import open_source
from .devices import resolve_device, resolve_precision
from .distributed import World, check_batch, local_device, start, stop, world_from_env
from .errors import ConfigError, MedsaganError, RunError
from .evaluate.calibration import calibrate, fit_reference
from .evaluate.selection import describe, pseudo_validation, validation_metric
from .files import RunLock, atomic_write_text, check_output, load_tensors
from .models import AnomalyDetector, build_detector, build_generator
from .records import Selection, separation_warning
from .runs import RunDir
from .time_budget import resolve_time_budget
from .trainer import Trainer, critic_step, generator_step, lr_factor
from .training_log import Meter, truncate_log, write_record

__all__ = ["Trainer", "critic_step", "fit", "generator_step", "lr_factor"]

log = logging.getLogger("medsagan")


def data_summary(data: TrainingData, source_text: str, select_by: str) -> dict:
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
            "selection": describe(data.validation, select_by),
            "normal": len(data.val_normal) if data.val_normal else 0,
            "positive": len(data.val_positive) if data.val_positive else 0,
        },
        "skipped_images": data.skipped,
    }


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
    if done > cfg.train.iterations and not cfg.train.epochs:  # a length in epochs is resolved from the data
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
    With model.ensemble = K > 1 the K members are trained one after another (_fit_ensemble).
    """
    if cfg.model.ensemble > 1:
        return _fit_ensemble(cfg, RunDir(run_dir), resume, progress)
    started = time.perf_counter()
    if not resume:
        check_output(run_dir, kind="run")  # before any data is read or any folder made
    run, world = RunDir(run_dir), world_from_env()
    cfg = cfg.with_absolute_paths()
    if not cfg.train.time_budget and not cfg.train.epochs:
        cfg = cfg.fixed_schedule()  # decay in iterations: a later --resume keeps it
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
                _train(cfg, run, state, progress and world.is_main, world, device, started)
            except Exception:
                if world.is_main and not resume and not run.states():
                    _remove_failed_start(run.path, created)
                raise
            # Every rank leaves together (rank 0 calibrates last): one that tore down gloo while its peer still
            # held the connection aborted now and then ("terminate called without an active exception").
            world.broadcast(None)
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


def _train(
    cfg: Config, run: RunDir, state: dict | None, progress: bool, world: World, device: torch.device, started: float
) -> None:
    t = cfg.train
    main = world.is_main
    torch.manual_seed(t.seed)

    # Load the training pools and the validation data; the test set is never read here.
    source = open_source(cfg)
    if not main:
        world.broadcast(None)  # wait for rank 0 to decode and cache the images, then read its cache
    data = build_training_data(source, cfg, run.cache_dir(cfg))
    summary = data_summary(data, source.describe(), cfg.evaluation.select_by)
    if t.epochs:
        # A length in passes over the labelled normals: fix the iterations from the data and save them. A resumed
        # run given its unresolved config resolves it again from the same data to the same iterations.
        normals, epochs = len(data.normal), t.epochs
        cfg = iterations_for_epochs(cfg, normals)
        t = cfg.train
        summary["schedule"] = {"epochs": epochs, "labelled_normals": normals, "iterations": t.iterations}
    if main:
        world.broadcast(None)
        if "schedule" in summary:
            cfg.save(run.config)
        elif run.data.is_file():
            # Resumed with the config as saved, already in iterations: the record of the epochs stays.
            earlier = json.loads(run.data.read_text()).get("schedule")
            if earlier:
                summary["schedule"] = earlier
        atomic_write_text(run.data, json.dumps(summary, indent=1))
        run.save_digests(data.digests())

    # A time budget: measure this machine on a throw-away copy, then fix the iterations (budget.py).
    if t.time_budget and state is None:
        cfg, plan = resolve_time_budget(cfg, data, device, world, time.perf_counter() - started, run.path)
        t = cfg.train
        if main:
            cfg.save(run.config)
            atomic_write_text(run.path / "budget.json", json.dumps(plan.to_dict(), indent=1))
            log.info("%s", plan.describe())

    # Build the networks, their optimisers, the sampler and the objective (the same on every rank).
    trainer = Trainer(cfg, device, data.normal.images, data.unlabeled.images, world)
    # Selection reads scores only, which the map's blur and reference never change: a plain detector.
    detector = AnomalyDetector(trainer.scored_generator)
    description, select_from = describe(data.validation, cfg.evaluation.select_by), selection_start(cfg)
    pseudo = pseudo_validation(data, cfg) if main else None
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
    # The loop's wall time, added up over a resumed run's parts (a killed part counts up to its checkpoint).
    part_began, earlier_parts = time.perf_counter(), float(state.get("train_seconds", 0.0)) if state else 0.0
    train_seconds = lambda: earlier_parts + time.perf_counter() - part_began  # noqa: E731
    bar = tqdm(total=t.iterations, initial=start_at, disable=not progress, unit="it", dynamic_ncols=True)
    with open(run.log, "a") if main else nullcontext() as log_file:
        for step in range(start_at + 1, t.iterations + 1):
            meter.add(trainer.iteration(step), t.batch_size)
            bar.update(1)
            last = step == t.iterations

            # Log the mean losses of the window (over every rank) and the throughput.
            if step % t.log_every == 0 or last:
                record = {"iteration": step, **world.mean(meter.flush()), "lr_g": trainer.opt_g.param_groups[0]["lr"]}
                record["train_seconds"] = round(train_seconds(), 2)
                if main:
                    write_record(log_file, record)
                shown = {"D/loss": "D", "G/loss": "G", "G/identity": "id", "G/restoration": "rec"}
                postfix = {short: f"{record[key]:.3f}" for key, short in shown.items() if key in record}
                bar.set_postfix({**postfix, "img/s": f"{record['images_per_s']:.0f}"})

            # Validate (rank 0) and keep the best generator by the validation metric, from select_from on.
            if main and (step % t.validate_every == 0 or last):
                result, signals = validation_metric(detector, data, cfg.evaluation.select_by, pseudo)
                eligible = step >= select_from
                if eligible and (result is None or best.value is None or result[1] > best.value):
                    best = Selection(step, result and result[0], result and result[1], description)
                    best_weights = {k: v.detach().clone() for k, v in trainer.scored_generator.state_dict().items()}
                    run.save_best(best_weights, best)
                if result is not None:
                    write_record(log_file, {"iteration": step, **signals, "best_iteration": best.iteration})

            # End early (train.patience): no better selection metric in that many validations since the best.
            stop = False
            if t.patience and step % t.validate_every == 0 and not last:
                stale = (
                    main and best.value is not None and ends_early(step, best.iteration, t.patience, t.validate_every)
                )
                stop = bool(world.broadcast(stale))

            # Checkpoint the whole training state (rank 0), the best weights so far included.
            if main and (step % t.checkpoint_every == 0 or last or stop):
                snapshot = {"iteration": step, **trainer.state_dict(), "best": best.to_dict()}
                snapshot["train_seconds"] = train_seconds()
                run.save_state(step, {**snapshot, "best_generator": best_weights}, t.keep_checkpoints)
            if stop:
                cfg = cfg.replace(train={"iterations": step})
                if main:
                    cfg.save(run.config)  # what the run chose: a resume finds it finished
                    log.info("ended early at iteration %d: no better selection metric since %d", step, best.iteration)
                break
    bar.close()

    # Done: fit the map's reference, the threshold and the heatmap scale with the selected generator.
    if main:
        _calibrate(cfg, run, data, best_weights, best, device)


def _calibrate(cfg: Config, run: RunDir, data: TrainingData, weights: dict, chosen: Selection, device) -> None:
    """Fit the chosen generator's map reference, threshold and heatmap scale on the held-out data; save them."""
    detector = build_detector(cfg.model, build_generator(cfg.model).to(device))
    detector.generator.load_state_dict(weights)
    normals_scored = None
    if cfg.model.map_reference == "normals":
        detector.reference, normals_scored = fit_reference(detector, data)
        run.save_reference(detector.reference, chosen)
    calibration = calibrate(detector, data, cfg.evaluation, chosen, normals_scored)
    run.save_calibration(calibration)
    warning = separation_warning(calibration)
    if warning:
        log.warning(warning)


def _fit_ensemble(cfg: Config, run: RunDir, resume: bool, progress: bool) -> Path:
    """model.ensemble: the members trained as runs of their own under RUN/members/k, then kept together.

    Their chosen weights go into RUN/best.pt, and their mean restoration is calibrated on the held-out data.

    A member is a run of its own: it resumes, ends early and chooses its checkpoint as any run does, and a
    resumed ensemble continues each member as that member saved itself.
    """
    if world_from_env().size > 1:
        raise ConfigError("model.ensemble trains its members one after another; run it without torchrun")
    if not resume:
        check_output(run.path, kind="run")
    elif run.config.is_file() and run.load_config().train.iterations != cfg.train.iterations:
        raise RunError(
            f"{run}: an ensemble resumes its members as they saved themselves; to train longer, start a new run"
        )
    cfg = cfg.with_absolute_paths()
    device = resolve_device(cfg.train.device)
    with ExitStack() as held:
        _open(run, cfg, resume, held)
        members = []
        for k in range(cfg.model.ensemble):
            member = run.member(k)
            started = member.config.is_file()
            if started:
                member_cfg = member.resumed_config({"device": cfg.train.device})
            else:
                member_cfg = cfg.replace(model={"ensemble": 1}, train={"seed": cfg.train.seed + k})
            log.info("ensemble member %d of %d: %s", k + 1, cfg.model.ensemble, member)
            fit(member_cfg, member.path, resume=started, progress=progress)
            members.append(member)

        digests = [m.load_digests() for m in members]
        if any(d != digests[0] for d in digests):
            raise RunError(f"{run}: the ensemble's members trained on different images; train it again")
        chosen = [m.load_best() for m in members]
        weights = {f"members.{k}.{name}": v for k, (w, _) in enumerate(chosen) for name, v in w.items()}
        data = build_training_data(open_source(cfg), cfg, run.cache_dir(cfg))
        detector = AnomalyDetector(build_generator(cfg.model).to(device))
        detector.generator.load_state_dict(weights)
        result, _ = validation_metric(detector, data, cfg.evaluation.select_by, pseudo_validation(data, cfg))
        rule = chosen[0][1].selection
        iterations = ", ".join(str(s.iteration) for _, s in chosen)
        best = Selection(
            max(s.iteration for _, s in chosen),
            result and result[0],
            result and result[1],
            f"the mean restoration of {len(members)} members, chosen at iterations {iterations} by {rule}",
        )
        atomic_write_text(run.data, members[0].data.read_text())
        run.save_digests(digests[0])
        run.save_best(weights, best)
        _calibrate(cfg, run, data, weights, best, device)
    return run.path


def ends_early(step: int, best_iteration: int, patience: int, validate_every: int) -> bool:
    """train.patience's rule: `patience` validations have passed since the best selection metric."""
    return bool(patience) and step - best_iteration >= patience * validate_every


def iterations_for_epochs(cfg: Config, normals: int) -> Config:
    """The config with train.iterations set to `train.epochs` passes over `normals` images and epochs cleared."""
    t = cfg.train
    iterations = max(1, round(t.epochs * normals / t.batch_size))
    return cfg.replace(train={"iterations": iterations, "epochs": 0.0}).fixed_schedule()
