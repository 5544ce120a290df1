"""One typed configuration for a run, saved with every run.

Layers: dataclass defaults (the paper's), then a preset, a YAML file and `key=value` overrides. Unknown keys
and out-of-range values are errors. Defaults cite zzr728/SAGAN at commit 2fa5bd7 (main.py, solver.py,
model.py, data_loader.py, train.sh) or the paper's section.
"""

import dataclasses
import math
import re
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from .config_parse import (  # noqa: F401  (re-exported: medsagan.config is where callers find them)
    MOVED,
    REPLACED,
    build,
    key,
    merge,
    parse_bounds,
    parse_overrides,
    range_text,
    read_yaml,
    to_plain,
    yaml_problem,
)
from .errors import ConfigError
from .presets import PRESETS

Architecture = Literal["sagan", "baseline"]
SourceKind = Literal["auto", "medad", "folder", "classes", "medmnist", "synthetic"]
UnlabeledDraw = Literal["prefix", "random"]
PseudoAnomaly = Literal["fpi", "cutpaste"]
LRSchedule = Literal["constant", "linear", "official"]
Precision = Literal["float32", "bfloat16", "auto"]
MedMNISTTask = Literal["", "pneumoniamnist", "retinamnist", "breastmnist"]
PresetName = Literal["paper", "fast", "baseline"]
Upsample = Literal["transposed", "resize"]
Residual = Literal["input", "logit"]
RestorationRegion = Literal["image", "patch"]
SelectBy = Literal["validation", "pseudo", "combined"]
Intensity = Literal["none", "equalize", "clahe", "percentile"]
Validation = Literal["auto", "labelled", "heldout"]
MapReference = Literal["none", "normals"]


@dataclass(frozen=True)
class ModelConfig:
    """The networks (official model.py at zzr728/SAGAN 2fa5bd7)."""

    architecture: Architecture = "sagan"  # "baseline": Brainomaly's generator (paper Table 3)
    image_size: int = key(64, ">= 8")  # paper Sec. 3.1: all inputs resized to 64 x 64
    channels: int = 1  # official code reads grey (LAG too); 3 keeps colour fundus photos
    patches: int = key(2, ">= 1")  # N of the N x N patch grid; official solver.py num_patch = 2
    conv_dim: int = key(64, ">= 1")  # official g_conv_dim
    residual_blocks: int = key(6, ">= 0")  # official g_repeat_num
    acm: bool = True  # anatomical consistency module: patch split + position codes (paper Sec. 2.2)
    arrm: bool = True  # abnormal region restoration module: gates, decoder blocks, fusion (paper Sec. 2.3)
    # keep probability p of the training mask, paper Eq. 1; official literal 0.95
    mask_keep: float = key(0.95, "(0, 1]")
    d_conv_dim: int = key(64, ">= 1")  # official d_conv_dim
    d_layers: int = key(6, ">= 1")  # official d_repeat_num: six stride-2 convs, a 1x1 critic map at 64 px
    # the critic's LeakyReLU negative slope; official 0.01 (DCGAN's critics use 0.2)
    d_slope: float = key(0.01, "[0, 1)", added=0.01)
    # the decoder's doubling: "transposed" 4x4 stride-2 convs (official model.py), or "resize" (nearest, then 3x3)
    upsample: Upsample = key("transposed", added="transposed")
    # what the map is added to before tanh: "input", x' = tanh(map + x) (paper Eq. 2, official), or "logit",
    # x' = tanh(map + atanh(x)), where a zero map is the identity (docs/localisation.md)
    residual: Residual = key("input", added="input")
    # Gaussian blur (sigma in pixels) of the anomaly map that localisation, heatmaps and "where" read; the
    # score stays the mean of the unblurred map. 0: the paper's raw map (docs/localisation.md)
    map_sigma: float = key(0.0, ">= 0", added=0.0)
    # "normals": the map minus the mean map of the held-out normals (fitted with the threshold), so that a
    # place the generator restores badly in every image stops looking anomalous; "none": the paper's map
    map_reference: MapReference = key("none", added="none")
    # K > 1: K generators trained one after another with seeds train.seed to train.seed + K - 1 on the same
    # images, each choosing its own checkpoint (RUN/members/k); the run restores with the mean of their
    # restorations, K times the compute. 1: one generator (the paper) (docs/transfer.md)
    ensemble: int = key(1, ">= 1", added=1)


@dataclass(frozen=True)
class DataConfig:
    """The dataset and the paper's protocol for the unlabelled set (official data_loader.py)."""

    path: str = ""  # Med-AD root (images/ + data.json), a folder layout, class folders, a MedMNIST .npz, or "synthetic"
    source: SourceKind = "auto"  # the layout of data.path; auto recognises it (docs/data.md)
    # share of abnormals in the unlabelled set; official data_loader.py ar=0.6
    anomaly_ratio: float = key(0.6, "[0, 1]")
    # labelled normals used, drawn as unlabeled_draw says; -1: all (official)
    labeled_size: int = key(-1, ">= -1", added=-1)
    # -1: as many as the labelled normals (official); 0: none (paper Table 4 "0_u")
    unlabeled_size: int = key(-1, ">= -1")
    unlabeled_draw: UnlabeledDraw = "prefix"  # "prefix" of each pool in file order (official), or "random"
    # The images that choose the checkpoint and fit the threshold: "auto", the dataset's labelled val split when
    # it has one, else held-out training images (label-free AUCp); "labelled", the val split (an error without
    # one); "heldout", held-out training images even beside a val split, which a split of a few images needs.
    validation: Validation = key("auto", added="auto")
    # share of labelled normals held out for selection when the labelled val split is not used
    val_fraction: float = key(0.1, "[0, 1)")
    # Share of the unlabelled set held out of training, so the label-free AUCp is measured on images the
    # networks never saw (AUCp on training images also rewards memorising them); 0: AUCp on the training set.
    val_unlabeled_fraction: float = key(0.1, "[0, 1)", added=0.0)
    fixed_pairing: bool = False  # official pairs unlabelled[i] with normal[i] (shifted so all are used)
    medmnist_task: MedMNISTTask = ""  # "" guesses from the file name
    skip_bad: bool = False  # skip unreadable images and report them, instead of stopping
    # Per-image intensity normalisation before the model, the same in training, evaluation, predict, serve and
    # ONNX (data/intensity.py): none (the paper), equalize, clahe, percentile (a 1-99th percentile window).
    intensity: Intensity = key("none", added="none")
    cache_dir: str = ""  # decoded-image cache; "" puts .medsagan-cache beside the run directory
    synthetic_count: int = key(600, ">= 8")  # images per class pool of the built-in synthetic dataset (demo)


@dataclass(frozen=True)
class LossConfig:
    """The objective's weights and the pseudo-anomalies (paper Eq. 3-7; official solver.py)."""

    lambda_id: float = key(1.0, ">= 0")  # identity L1 weight, paper Eq. 6; official main.py lambda_id = 1
    lambda_rec: float = key(1.0, ">= 0")  # pseudo-anomaly restoration MSE weight, paper Eq. 6; official hard-coded 1
    # Where the restoration MSE is averaged: "image", over the whole image (paper Eq. 4); "patch", over each
    # pseudo-anomaly's box. A box covers ~6 % of the image and many blends are faint, so over the whole image
    # the term is ~0.002 beside an identity error ~0.03 and the generator learns to copy patches, not restore.
    restoration_region: RestorationRegion = key("image", added="image")
    # weight of the generator's adversarial term; paper Eq. 6 weighs it 1 (official solver.py), as the paper preset
    lambda_adv: float = key(1.0, ">= 0", added=1.0)
    # weight of the total variation of x' - x on the unlabelled images and pseudo-anomalies; 0: the paper
    lambda_tv: float = key(0.0, ">= 0", added=0.0)
    lambda_gp: float = key(10.0, ">= 0")  # gradient penalty weight, paper Eq. 7; official main.py lambda_gp = 10
    # The penalty on every k-th critic step only, weighted k times (lazy regularisation, StyleGAN2); 1: the paper.
    gp_every: int = key(1, ">= 1", added=1)
    pseudo_anomaly: PseudoAnomaly = "fpi"  # FPI patch blend (paper Sec. 3.1, official) or CutPaste
    # box centres lie in this central share of the image; official core_percent 0.6
    fpi_core: float = key(0.6, "(0, 1]")
    fpi_half_width: tuple[float, float] = (0.05, 0.2)  # box half-width range, share of the side; official
    # The critic's real normals pass through the generator's training mask as a perfect restoration would
    # (tanh(2x) at the masked pixels), so real and fake carry the same mask noise. Off: the paper's critic,
    # which can learn to spot the noise that the generator cannot remove (README, Results).
    critic_real_mask: bool = key(False, added=False)
    # Differentiable augmentation of everything the critic sees (DiffAugment, Zhao et al. 2020), real, restored
    # and the penalty's interpolates alike: a comma-separated list of brightness, contrast, translation,
    # scale, cutout (augment.py). "": off (the paper).
    critic_augment: str = key("", added="")
    critic_augment_p: float = key(1.0, "(0, 1]", added=1.0)  # the chance that each listed transform applies to an image
    # Augmentation of every training image before the objective sees it: labelled normals (so the identity and
    # restoration terms see more than the few normals there are), FPI sources and unlabelled images alike, so
    # the critic cannot tell real from fake by it. brightness, contrast, translation, scale; "": off (the paper).
    image_augment: str = key("", added="")
    image_augment_p: float = key(0.5, "(0, 1]", added=0.5)  # the chance that each listed transform applies to an image


@dataclass(frozen=True)
class TrainConfig:
    """The schedule (paper Sec. 3.1; official main.py and train.sh)."""

    iterations: int = key(100_000, ">= 1")  # critic iterations; paper Sec. 3.1 and official main.py
    batch_size: int = key(32, ">= 2")  # official train.sh; the paper's text says 64
    n_critic: int = key(2, ">= 1")  # generator step every n_critic critic steps; paper Sec. 3.1
    lr_g: float = key(5e-5, "> 0")  # paper Sec. 3.1 and official main.py
    lr_d: float = key(5e-5, "> 0")  # paper Sec. 3.1 and official main.py
    beta1: float = key(0.5, "[0, 1)")  # official Adam betas (0.5, 0.999)
    beta2: float = key(0.999, "[0, 1)")  # official Adam betas (0.5, 0.999)
    lr_schedule: LRSchedule = "constant"  # constant (what the official decay amounts to) | linear | official
    # Where the decay begins: a share of the run (< 1) or an iteration (>= 1); official num_iters_decay
    # 50000 of 100000 is 0.5. A new run saves it, and the decay length, as iterations (see fixed_schedule).
    lr_decay_start: float = key(0.5, ">= 0")
    lr_decay_length: int = key(0, ">= 0")  # iterations the decay lasts; 0: to the end of the run
    validate_every: int = key(1000, ">= 1")  # official log_step 1000; selection here uses validation data, never test
    checkpoint_every: int = key(1000, ">= 1")  # official model_save_step 1000
    keep_checkpoints: int = key(3, ">= 1")  # training-state checkpoints kept besides best.pt
    log_every: int = key(50, ">= 1")  # iterations between JSON-lines log records
    seed: int = key(0, ">= 0")  # seeds every random stream: sampler, pseudo-anomalies, penalty mixing, masks, weights
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N | mps
    # float32 as the paper; bfloat16 autocast for the training passes (validation and scoring stay float32);
    # auto: bfloat16 where the device computes it natively, else float32. A new run saves what auto chose.
    precision: Precision = "float32"
    # Exponential moving average of the generator's weights, used for validation, selection and scoring
    # (as StyleGAN2-ADA and EDM keep one): its half-life in images through the generator; 0: off (paper).
    ema_half_life: float = key(0.0, ">= 0", added=0.0)
    # Restore the unlabelled batch once per generator iteration: the critic's fake is the generator step's
    # restoration (same weights, one mask draw) instead of a second forward pass. Off: the paper's two passes.
    reuse_restoration: bool = key(False, added=False)
    # torch.compile the generator's training passes (not the critic: its penalty's double backward is not
    # supported by compile). Same function, fused kernels; the first iterations pay for compiling.
    compile: bool = key(False, added=False)
    # A wall-clock budget such as "30m" or "1h30m" for a new run: a probe of this machine sets train.iterations so
    # that the decay ends on time; the run saves the chosen iterations with the budget cleared. "": off.
    time_budget: str = key("", added="")
    # The run's length in passes over the labelled training normals instead of train.iterations, so that a small
    # dataset is not trained for hundreds of passes: a new run sets iterations = round(epochs x normals /
    # batch_size) and saves them with epochs cleared (data.json keeps the choice). 0: train.iterations.
    epochs: float = key(0.0, ">= 0", added=0.0)
    # End the run once the selection metric has not risen for this many validations since its best (counted from
    # evaluation.select_from on); the run saves the iteration it ended at as train.iterations. 0: off (paper).
    patience: int = key(0, ">= 0", added=0)


@dataclass(frozen=True)
class EvaluationConfig:
    """Model selection and the decision threshold, both on validation data, never on the test set."""

    val_max_images: int = key(1000, ">= 1")  # cap per validation class, to bound the cost of selection
    threshold_specificity: float = key(0.95, "(0, 1)")  # label-free threshold: this share of held-out normals below it
    # The first iteration whose checkpoint may be chosen: a share of the run (< 1) or an iteration (>= 1); 0:
    # any. The paper does not say (the official code picks on the test set). A new run saves it as an iteration.
    select_from: float = key(0.0, ">= 0", added=0.0)
    # The signal that chooses the checkpoint (evaluate/selection.py): "validation", the run's validation AUC
    # (labelled val split, or label-free AUCp); "pseudo", held-out normals against pseudo-anomalies made from
    # them; "combined", the mean of the two. Every validation logs all of them.
    select_by: SelectBy = key("validation", added="validation")


@dataclass(frozen=True)
class Config:
    """A whole run's settings; frozen once built and validated."""

    preset: PresetName = "paper"  # applied before the YAML file and overrides
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts and lists, as saved in config.yaml."""
        return to_plain(asdict(self))

    def replace(self, **sections: dict[str, Any]) -> "Config":
        """A copy with some keys of some sections changed: `cfg.replace(train={"iterations": 10})`."""
        changed = {name: dataclasses.replace(getattr(self, name), **values) for name, values in sections.items()}
        replaced = dataclasses.replace(self, **changed)
        validate(replaced)
        return replaced

    def with_absolute_paths(self) -> "Config":
        """A copy whose data paths are absolute, so a saved run works from any directory."""
        data = self.data
        absolute = lambda p: str(Path(p).expanduser().resolve()) if p and Path(p).expanduser().exists() else p  # noqa: E731
        path = data.path if data.path == "synthetic" else absolute(data.path)
        cache = str(Path(data.cache_dir).expanduser().resolve()) if data.cache_dir else ""
        return self.replace(data={"path": path, "cache_dir": cache})

    def fixed_schedule(self) -> "Config":
        """A copy whose learning-rate decay is in iterations, so extending the run later keeps its schedule."""
        start, length = decay_window(self.train)
        fixed = self.replace(train={"lr_decay_start": float(start), "lr_decay_length": length})
        return fixed.replace(evaluation={"select_from": float(selection_start(self))})

    def save(self, path: str | Path) -> None:
        """Write config.yaml atomically."""
        from .files import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def decay_window(t: TrainConfig) -> tuple[int, int]:
    """(first iteration of the decay, its length in iterations) from a share of the run or iterations."""
    start = round(t.lr_decay_start * t.iterations) if t.lr_decay_start < 1 else int(t.lr_decay_start)
    return start, t.lr_decay_length or max(1, t.iterations - start)


def selection_start(cfg: "Config") -> int:
    """The first iteration whose checkpoint selection may choose, from a share of the run or an iteration."""
    start = cfg.evaluation.select_from
    return round(start * cfg.train.iterations) if start < 1 else int(start)


def choices(key: str) -> tuple[str, ...]:
    """The allowed values of a Literal-typed key such as "data.source" (the CLI's choices come from here)."""
    section, name = key.split(".")
    owner = typing.get_type_hints(Config)[section]
    return typing.get_args(typing.get_type_hints(owner)[name])


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None, preset: str | None = None
) -> Config:
    """Defaults -> preset -> YAML file -> overrides; unknown keys and wrong types raise ConfigError."""
    layered = merge(read_yaml(path) if path else {}, overrides or {})
    name = preset or layered.get("preset") or "paper"
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    layered["preset"] = name
    config = build(Config, merge(PRESETS[name], layered), "")
    validate(config)
    return config


# Allowed range of each numeric setting, from its field: (low, high, low inclusive, high inclusive).
RANGES: dict[str, tuple[float, float | None, bool, bool]] = {}
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def validate(cfg: Config) -> None:
    """Range and cross-field checks, so a wrong value fails when the config is built, not hours into a run."""
    for section in fields(cfg):
        values = getattr(cfg, section.name)
        if not dataclasses.is_dataclass(values):
            continue
        for item in fields(values):
            value = getattr(values, item.name)
            numbers = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
                raise ConfigError(f"{section.name}.{item.name} = {value!r} is not a finite number; give a real value")
    for dotted, (low, high, low_in, high_in) in RANGES.items():
        section, name = dotted.split(".")
        value = getattr(getattr(cfg, section), name)
        too_low = value < low if low_in else value <= low
        too_high = high is not None and (value > high if high_in else value >= high)
        if too_low or too_high:
            raise ConfigError(
                f"{dotted} = {value!r} is out of range; it must be {range_text(low, high, low_in, high_in)}"
            )
    if selection_start(cfg) > cfg.train.iterations:
        raise ConfigError(
            f"evaluation.select_from = {cfg.evaluation.select_from:g} is past train.iterations = "
            f"{cfg.train.iterations}, so no checkpoint could be chosen; lower it or give a share of the run (< 1)"
        )
    if cfg.train.time_budget and cfg.train.epochs:
        raise ConfigError("train.time_budget and train.epochs both set the run's length; give one of them")
    if cfg.model.ensemble > 1 and cfg.train.time_budget:
        raise ConfigError(
            "train.time_budget plans one generator's run, not model.ensemble's members; give train.iterations or "
            "train.epochs with an ensemble"
        )
    if cfg.model.ensemble > 1 and cfg.data.unlabeled_draw == "random":
        raise ConfigError(
            "model.ensemble's members must train on the same images, but data.unlabeled_draw = random draws them "
            "from each member's seed; use data.unlabeled_draw = prefix with an ensemble"
        )
    if cfg.train.time_budget:
        from .budget import parse_duration

        parse_duration(cfg.train.time_budget)
    if cfg.loss.critic_augment or cfg.loss.image_augment:
        from .augment import IMAGE_TRANSFORMS, parse_policy

        parse_policy(cfg.loss.critic_augment)
        parse_policy(cfg.loss.image_augment, "loss.image_augment", IMAGE_TRANSFORMS)
    if cfg.model.channels not in (1, 3):
        raise ConfigError(f"model.channels = {cfg.model.channels!r} must be 1 (grey) or 3 (colour)")
    if not DEVICE.match(cfg.train.device):
        raise ConfigError(f"train.device = {cfg.train.device!r} is unknown; use auto, cpu, cuda, cuda:N or mps")
    low, high = cfg.loss.fpi_half_width
    if not 0 < low <= high <= 0.5:
        raise ConfigError(
            f"loss.fpi_half_width = [{low}, {high}] must satisfy 0 < low <= high <= 0.5 (shares of the image side)"
        )
    if cfg.model.architecture == "sagan":
        from .geometry import check_geometry

        check_geometry(cfg.model.image_size, cfg.model.patches)
    elif cfg.model.image_size % 4:
        raise ConfigError(
            f"model.image_size {cfg.model.image_size} does not suit the baseline generator: it halves the image "
            "twice and needs a multiple of 4 (for example 32, 64, 128 or 256)"
        )


# Keys added later, with the value that gives an older saved run's behaviour when it is read back (from the field).
ADDED: dict[str, Any] = {}


def _field_metadata() -> None:
    """RANGES and ADDED, read from the fields' own metadata (key())."""
    for section in fields(Config):
        owner = typing.get_type_hints(Config)[section.name]
        if not dataclasses.is_dataclass(owner):
            continue
        for item in fields(owner):
            name = f"{section.name}.{item.name}"
            if "bounds" in item.metadata:
                RANGES[name] = parse_bounds(item.metadata["bounds"])
            if "added" in item.metadata:
                ADDED[name] = item.metadata["added"]


_field_metadata()


def migrate(values: dict[str, Any]) -> dict[str, Any]:
    """A saved run's config with moved keys in their new sections, and keys it predates as it ran."""
    values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for dotted, value in ADDED.items():
        section, name = dotted.split(".")
        if isinstance(values.get(section), dict):
            values[section].setdefault(name, value)
    for old, (new, convert) in REPLACED.items():
        (old_section, old_name), (new_section, new_name) = old.split("."), new.split(".")
        if old_name in values.get(old_section, {}):
            values.setdefault(new_section, {})[new_name] = convert(values[old_section].pop(old_name))
    for old, new in MOVED.items():
        (old_section, old_name), (new_section, new_name) = old.split("."), new.split(".")
        if old_name in values.get(old_section, {}):
            values.setdefault(new_section, {})[new_name] = values[old_section].pop(old_name)
    return values
