"""A run directory, the typed files in it, and loading a trained detector back from it.

RUN/config.yaml              the resolved configuration
RUN/data.json                the data the run trained on (counts, unlabelled set, validation, skipped)
RUN/training-digests.json    content digests of every training and validation image (leakage checks)
RUN/log.jsonl                losses and validation metrics, one JSON object per line
RUN/checkpoints/             full training states (state-<iteration>.pt), the last few
RUN/best.pt                  generator weights chosen on validation data, with their Selection
RUN/calibration.json         threshold and heatmap scale fitted for those weights (Calibration)
RUN/reference.pt             the held-out normals' mean anomaly map for those weights (model.map_reference)
RUN/evaluation/<split>/      metrics.json, scores.csv, curves.png, written by `medsagan evaluate`
RUN/members/<k>/             with model.ensemble = K > 1: the K member runs, each laid out as above; the
                             ensemble's best.pt holds their chosen weights together
"""

import json
import logging
import re
from pathlib import Path
from typing import Any

from .config import Config, load_config, migrate, read_yaml
from .errors import RunError
from .files import RunLock, atomic_torch_save, atomic_write_text, load_tensors
from .records import Calibration, Selection
from .training_log import read_log

log = logging.getLogger("medsagan")
STATE_PATTERN = re.compile(r"state-(\d{8})\.pt$")
# train.* keys a resumed run may change: how long it goes on, where it runs, and how often it logs and saves.
RESUMABLE = {"iterations", "device", "log_every", "validate_every", "checkpoint_every", "keep_checkpoints", "compile"}
STATE_KEYS = {"iteration", "generator", "critic", "opt_g", "opt_d", "sampler", "rng", "best", "best_generator"}


class RunDir:
    """The layout of one run folder; every reader and writer of a run goes through it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.data = self.path / "data.json"
        self.digests = self.path / "training-digests.json"
        self.log = self.path / "log.jsonl"
        self.checkpoints = self.path / "checkpoints"
        self.best = self.path / "best.pt"
        self.calibration = self.path / "calibration.json"
        self.reference = self.path / "reference.pt"

    def __str__(self) -> str:
        return str(self.path)

    def lock(self) -> RunLock:
        """The exclusive writer's lock of this run."""
        return RunLock(self.path)

    def evaluation(self, split: str) -> Path:
        """Where `evaluate` writes the results of `split` ("test", "val", "test-official")."""
        return self.path / "evaluation" / split

    def cache_dir(self, cfg: Config) -> Path:
        """The decoded-image cache: data.cache_dir, or .medsagan-cache beside the run folder."""
        return Path(cfg.data.cache_dir) if cfg.data.cache_dir else self.path.resolve().parent / ".medsagan-cache"

    # The configuration -------------------------------------------------------------------------------------

    def load_config(self) -> Config:
        """The run's saved configuration (keys moved since an older version are read in their new place)."""
        if not self.config.is_file():
            raise RunError(
                f"{self.path}: not a medsagan run (no config.yaml); pass the --out folder of `medsagan train`"
            )
        return load_config(overrides=migrate(read_yaml(self.config)))

    def resumed_config(self, train: dict[str, Any] | None = None) -> Config:
        """The saved configuration with some train.* keys changed (more iterations, another device).

        Only keys that leave the run the same run may change (RESUMABLE). More iterations move a learning-rate
        decay that has not begun so that it ends at the new last iteration, in the same share of the run; a run
        whose decay has begun cannot be extended, since every added iteration would train at a rate near zero.
        """
        saved = self.load_config()
        train = dict(train or {})
        fixed = sorted(set(train) - RESUMABLE)
        if fixed:
            raise RunError(
                f"{self}: train.{fixed[0]} cannot change when a run is resumed: it changes what the run is, not how "
                "long it goes on; start a new run with it (another --out). On resume only "
                f"{', '.join(sorted(RESUMABLE))} may change"
            )
        iterations = int(train.get("iterations", saved.train.iterations))
        if iterations > saved.train.iterations and saved.train.lr_schedule != "constant":
            train.update(self._extended_decay(saved, iterations))
        if iterations < saved.evaluation.select_from:
            raise RunError(
                f"{self}: selection chooses from iteration {saved.evaluation.select_from:g}, past --iterations "
                f"{iterations}; resume with --iterations {saved.evaluation.select_from:g} or more"
            )
        return saved.replace(**({"train": train} if train else {}))

    def _extended_decay(self, saved: Config, iterations: int) -> dict[str, Any]:
        """The decay window of the run extended to `iterations`, or a RunError when it has already begun."""
        old = saved.train.iterations
        start, length = int(saved.train.lr_decay_start), saved.train.lr_decay_length
        done = self.done_iterations()
        if done > start:
            raise RunError(
                f"{self}: its learning rate has been falling since iteration {start} and reaches zero at "
                f"{start + length}, so iterations past {old} would train at a rate near zero; start a new run "
                f"with --iterations {iterations} (another --out) instead"
            )
        new_start = round(start * iterations / old)
        new_length = iterations - new_start if start + length >= old else round(length * iterations / old)
        return {"lr_decay_start": float(new_start), "lr_decay_length": new_length}

    def done_iterations(self) -> int:
        """The iteration of the newest training state (0 before the first checkpoint), from its file name."""
        states = self.states()
        return int(STATE_PATTERN.search(states[-1].name).group(1)) if states else 0

    def train_seconds(self) -> float | None:
        """The training loop's wall time over all its parts (an ensemble's: its members'); None if unlogged."""
        members = self.members()
        if members:
            parts = [member.train_seconds() for member in members]
            return None if None in parts else sum(parts)
        logged = [r["train_seconds"] for r in read_log(self.log) if isinstance(r, dict) and "train_seconds" in r]
        return logged[-1] if logged else None

    def member(self, k: int) -> "RunDir":
        """The run of an ensemble's k-th member."""
        return RunDir(self.path / "members" / str(k))

    def members(self) -> list["RunDir"]:
        """An ensemble's member runs in order; [] for a single generator's run."""
        found = [p for p in (self.path / "members").glob("*/config.yaml") if p.parent.name.isdigit()]
        return [RunDir(p.parent) for p in sorted(found, key=lambda p: int(p.parent.name))]

    # Training states -------------------------------------------------------------------------------------

    def state_path(self, iteration: int) -> Path:
        """The file of the training state at `iteration`."""
        return self.checkpoints / f"state-{iteration:08d}.pt"

    def states(self) -> list[Path]:
        """Training-state files, oldest first."""
        found = [p for p in self.checkpoints.glob("state-*.pt") if STATE_PATTERN.search(p.name)]
        return sorted(found, key=lambda p: int(STATE_PATTERN.search(p.name).group(1)))

    def save_state(self, iteration: int, state: dict[str, Any], keep: int) -> Path:
        """Write atomically, then drop the oldest states beyond `keep`."""
        path = atomic_torch_save(self.state_path(iteration), state)
        for old in self.states()[:-keep]:
            old.unlink(missing_ok=True)
        return path

    def latest_state(self) -> dict[str, Any] | None:
        """The newest readable training state; None when the run stopped before its first checkpoint.

        An unreadable newest state (a disk that filled, a copy cut short) falls back to the one before, with
        a warning, so one bad file costs the iterations since the previous checkpoint, not the run.
        """
        states = self.states()
        for path in reversed(states):
            try:
                state = load_tensors(path, "medsagan training checkpoint")
            except RunError as err:
                log.warning("warning: %s; falling back to the checkpoint before it", err)
                continue
            if not isinstance(state, dict) or not set(state) >= STATE_KEYS:
                log.warning("warning: %s is not a medsagan training checkpoint; falling back to the one before", path)
                continue
            return state
        if states:
            raise RunError(
                f"{self.path}: none of the {len(states)} checkpoints in checkpoints/ can be read; "
                "start a new run with another --out"
            )
        return None

    # The selected weights and their calibration ------------------------------------------------------------

    def save_best(self, weights: dict[str, Any], selection: Selection) -> None:
        """Write best.pt: the selected generator weights with their Selection."""
        atomic_torch_save(self.best, {"generator": weights, **selection.to_dict()})

    def load_best(self) -> tuple[dict[str, Any], Selection]:
        """The selected generator weights and how they were selected."""
        if not self.best.is_file():
            raise RunError(f"{self.best}: missing; the run has not finished a validation yet (resume it with --resume)")
        best = load_tensors(self.best)
        if not isinstance(best, dict) or not isinstance(best.get("generator"), dict):
            raise RunError(f"{self.best}: not a medsagan checkpoint (no generator weights in it)")
        try:
            return best["generator"], Selection.from_dict(best)
        except (KeyError, TypeError, ValueError):
            raise RunError(f"{self.best}: not a medsagan checkpoint (no selection record in it)") from None

    def save_calibration(self, calibration: Calibration) -> None:
        """Write calibration.json."""
        atomic_write_text(self.calibration, json.dumps(calibration.to_dict(), indent=1))

    def load_calibration(self, selection: Selection) -> Calibration | None:
        """The calibration fitted for the weights `selection` describes.

        None when the run has none yet, or when it belongs to other weights: a resumed run still training
        has a newer best.pt than any calibration, and the two are never mixed.
        """
        if not self.calibration.is_file():
            return None
        try:
            calibration = Calibration.from_dict(json.loads(self.calibration.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise RunError(
                f"{self.calibration}: corrupt; refit it with `medsagan train --resume {self.path}`"
            ) from None
        return calibration if calibration.selection.iteration == selection.iteration else None

    def save_reference(self, reference: Any, selection: Selection) -> None:
        """Write reference.pt: the normals' mean map [1, S, S] fitted for the weights `selection` describes."""
        atomic_torch_save(self.reference, {"map": reference, **selection.to_dict()})

    def load_reference(self, selection: Selection) -> Any:
        """The reference map fitted for the weights `selection` describes; None when there is none for them."""
        if not self.reference.is_file():
            return None
        stored = load_tensors(self.reference)
        if not isinstance(stored, dict) or "map" not in stored:
            raise RunError(f"{self.reference}: corrupt; refit it with `medsagan train --resume {self.path}`")
        return stored["map"] if Selection.from_dict(stored).iteration == selection.iteration else None

    # Training-image digests, for leakage checks without reloading the training pools -----------------------

    def save_digests(self, digests: dict[str, str]) -> None:
        """Write the training images' digests (digest -> id)."""
        atomic_write_text(self.digests, json.dumps({"sha1": digests}))

    def load_digests(self) -> dict[str, str] | None:
        """Digest -> image id of every training and validation image; None for a run of an older version."""
        if not self.digests.is_file():
            return None
        try:
            return dict(json.loads(self.digests.read_text())["sha1"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise RunError(f"{self.digests}: corrupt; resume the run with --resume to rewrite it") from None


def load_detector(run_dir: str | Path, device: str = "auto"):
    """The selected generator of a run as a detector in eval mode, with the run's config and Selection."""
    from .devices import resolve_device
    from .models import build_detector, build_generator

    run = RunDir(run_dir)
    cfg = run.load_config()
    weights, selection = run.load_best()
    generator = build_generator(cfg.model)
    try:
        generator.load_state_dict(weights)
    except RuntimeError as err:
        lines = str(err).splitlines()
        first = lines[1].strip() if len(lines) > 1 else str(err)
        raise RunError(
            f"{run.best}: its weights do not fit the generator that {run.config} describes ({first})"
        ) from None
    detector = build_detector(cfg.model, generator)
    if cfg.model.map_reference == "normals":
        # A run still training has neither a reference nor a calibration for its newest best.pt: its maps are
        # then unreferenced, as its scores are uncalibrated. A calibrated run without one is broken.
        detector.reference = run.load_reference(selection)
        if detector.reference is None and run.load_calibration(selection) is not None:
            raise RunError(f"{run.reference}: missing; refit it with `medsagan train --resume {run.path}`")
    return detector.to(resolve_device(device)).eval(), cfg, selection
