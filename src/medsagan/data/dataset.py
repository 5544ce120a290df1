"""In-memory image sets and the training data of the paper's protocol (official data_loader.py at zzr728/SAGAN 2fa5bd7).

Decoded images live as one uint8 tensor per role, cached on disk by source, ids, size and channels,
so a second run starts at once and batches are slices of tensors, never per-image decoding.
"""

import hashlib
import logging
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..config import Config, DataConfig
from ..errors import DataError
from ..files import atomic_torch_save, load_tensors
from .intensity import normalise
from .source import SHOWN, Source

CACHE_VERSION = "1"  # bump when decoding changes, so old caches are not reused
log = logging.getLogger("medsagan")
FEW_VALIDATION = 20  # per class: below it a labelled val split decides checkpoints and thresholds by a few images
HOLDOUT_SEED = 0  # held-out validation normals are the same for every training seed


@dataclass
class ImageSet:
    """images: uint8 [N, C, S, S]; labels: 0 normal, 1 abnormal, -1 unknown; ids and paths per image."""

    images: Tensor
    ids: list[str]
    labels: Tensor
    paths: list[str]
    digests: list[str]
    skipped: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: Sequence[int] | Tensor) -> "ImageSet":
        """The images at `index`, in that order (no skipped list: it belongs to the whole load)."""
        index = torch.as_tensor(index, dtype=torch.long)
        pick = index.tolist()
        return ImageSet(
            self.images[index],
            [self.ids[i] for i in pick],
            self.labels[index],
            [self.paths[i] for i in pick],
            [self.digests[i] for i in pick],
            [],
        )

    @staticmethod
    def concat(*sets: "ImageSet") -> "ImageSet":
        """One set holding `sets` one after another."""
        return ImageSet(
            torch.cat([s.images for s in sets]),
            [i for s in sets for i in s.ids],
            torch.cat([s.labels for s in sets]),
            [p for s in sets for p in s.paths],
            [d for s in sets for d in s.digests],
            [k for s in sets for k in s.skipped],
        )


def to_model_range(images: Tensor) -> Tensor:
    """uint8 -> float in [-1, 1] (ToTensor then Normalize(0.5, 0.5), as the official loader)."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """The inverse of to_model_range for display: float in [-1, 1] -> uint8, rounded and clipped."""
    return np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _decode_one(source: Source, item: str, size: int, channels: int) -> tuple[np.ndarray | None, str, str]:
    try:
        return source.decode(item, size, channels), source.digest(item), ""
    except DataError as err:
        return None, "", str(err)


def load_images(
    source: Source,
    ids: list[str],
    label: int,
    size: int,
    channels: int,
    skip_bad: bool = False,
    cache_dir: str | Path | None = None,
    intensity: str = "none",
) -> ImageSet:
    """Decode `ids` of `source` (or read them from the cache) into an ImageSet with the given label.

    The cache keeps the decoded pixels; `intensity` (data.intensity) is applied after it, so one cache serves
    every normalisation.
    """
    key_text = "\n".join([CACHE_VERSION, source.kind, str(source.root.resolve()), str(size), str(channels)])
    key = hashlib.sha256((key_text + "\n" + "\n".join(map(source.stamp, ids))).encode()).hexdigest()[:24]
    cache = Path(cache_dir) / f"{source.kind}-{size}px-{channels}ch-{key}.pt" if cache_dir else None
    if cache is not None and cache.is_file():
        stored = load_tensors(cache)
        images, kept, digests, skipped = stored["images"], stored["ids"], stored["digests"], stored["skipped"]
        if skipped and not skip_bad:
            raise DataError(f"{len(skipped)} unreadable images, the first: {skipped[0]}; fix them or pass --skip-bad")
    else:
        workers = min(16, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:
            decoded = list(pool.map(lambda item: _decode_one(source, item, size, channels), ids))
        errors = [message for _, _, message in decoded if message]
        if errors and not skip_bad:
            more = f" ({len(errors) - 1} more unreadable)" if len(errors) > 1 else ""
            raise DataError(errors[0] + more)
        kept = [item for item, (array, _, _) in zip(ids, decoded, strict=True) if array is not None]
        digests = [digest for array, digest, _ in decoded if array is not None]
        skipped = errors
        shape = (0, channels, size, size)
        arrays = [array for array, _, _ in decoded if array is not None]
        images = torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros(shape, dtype=torch.uint8)
        if cache is not None:
            atomic_torch_save(cache, {"images": images, "ids": kept, "digests": digests, "skipped": skipped})
    images = torch.from_numpy(normalise(images.numpy(), intensity))
    paths = [str(source.path_of(item) or item) for item in kept]
    labels = torch.full((len(kept),), label, dtype=torch.long)
    return ImageSet(images, list(kept), labels, paths, list(digests), list(skipped))


def load_configured(source: Source, ids: list[str], label: int, cfg: Config, cache_dir) -> ImageSet:
    """load_images with the run's image size, channels, skip_bad and intensity normalisation."""
    model, data = cfg.model, cfg.data
    return load_images(source, ids, label, model.image_size, model.channels, data.skip_bad, cache_dir, data.intensity)


def unlabeled_counts(pools: dict[str, list[str]], cfg: DataConfig, where: str = "") -> tuple[int, int, int]:
    """(normal, abnormal, unknown) sizes of the protocol's unlabelled set, or a DataError if impossible.

    Official rule: as many unlabelled images as labelled normals, int(size * anomaly_ratio) of them abnormal.
    `where` names the dataset in errors.
    """
    if cfg.unlabeled_size == 0:
        return 0, 0, 0
    labelled = labeled_count(pools, cfg, where)
    pooled = [pools.get(key, []) for key in ("train/unlabeled", "train/unlabeled/0", "train/unlabeled/1")]
    if not any(pooled):
        raise DataError(
            f"{where or 'the dataset'}: no unlabelled images (unlabeled/ is missing or empty); add them, or set "
            "data.unlabeled_size=0 to train on labelled normals and pseudo-anomalies only (the paper's 0_u, Table 4)"
        )
    if "train/unlabeled" in pools:
        available = len(pools["train/unlabeled"])
        size = available if cfg.unlabeled_size < 0 else cfg.unlabeled_size
        if size > available:
            raise DataError(f"data.unlabeled_size {size} exceeds the {available} images in unlabeled/")
        return 0, 0, size
    size = labelled if cfg.unlabeled_size < 0 else cfg.unlabeled_size
    normals, abnormals = len(pools.get("train/unlabeled/0", [])), len(pools.get("train/unlabeled/1", []))
    abnormal = int(size * cfg.anomaly_ratio)
    if abnormal <= abnormals and size - abnormal <= normals:
        return size - abnormal, abnormal, 0
    if size > normals + abnormals:
        raise DataError(
            f"the unlabelled set needs {size} images but the pools hold {normals} normal + {abnormals} abnormal; "
            f"set data.unlabeled_size to at most {normals + abnormals}"
        )
    feasible = [
        r / 100 for r in range(101) if int(size * r / 100) <= abnormals and size - int(size * r / 100) <= normals
    ]
    raise DataError(
        f"data.anomaly_ratio {cfg.anomaly_ratio} needs {abnormal} abnormal and {size - abnormal} normal unlabelled "
        f"images; the pools hold {abnormals} abnormal and {normals} normal. The largest ratio they can give at "
        f"{size} images is {max(feasible):.2f} (smallest {min(feasible):.2f})"
    )


def labeled_count(pools: dict[str, list[str]], cfg: DataConfig, where: str = "") -> int:
    """How many labelled normals the protocol uses: data.labeled_size of the pool, or all of it."""
    available = len(pools.get("train/0", []))
    if cfg.labeled_size > available:
        raise DataError(
            f"{where or 'the dataset'}: data.labeled_size {cfg.labeled_size} exceeds the {available} labelled normal "
            f"training images; set it to at most {available}, or -1 for all"
        )
    return available if cfg.labeled_size < 0 else cfg.labeled_size


def labelled_validation(pools: Mapping[str, list[str]], cfg: DataConfig, where: str = "") -> bool:
    """Whether a run validates on the labelled val split (data.validation), or an error if it must and cannot."""
    present = bool(pools.get("val/0") and pools.get("val/1"))
    if cfg.validation == "labelled" and not present:
        raise DataError(
            f"{where or 'the dataset'}: data.validation = labelled, but there is no labelled val split with normal "
            "and abnormal images; add val/normal/ and val/abnormal/ (or val/ class folders), or set "
            "data.validation=auto"
        )
    return present and cfg.validation != "heldout"


def few_validation(normal: int, abnormal: int) -> str | None:
    """The warning for a labelled val split too small to choose a checkpoint or fit a threshold on; None if not."""
    if min(normal, abnormal) >= FEW_VALIDATION:
        return None
    return (
        f"few: the checkpoint and the threshold would rest on {normal} normal and {abnormal} abnormal images; add "
        "images to val/, or set data.validation=heldout to hold out training images instead"
    )


def _draw(ids: list[str], count: int, mode: str, seed: int) -> list[str]:
    if mode == "prefix":
        return ids[:count]
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))[:count]
    return [ids[i] for i in sorted(order.tolist())]


def holdout_count(n: int, fraction: float) -> int:
    """Labelled normals held out for validation: ceil(n x fraction), at least 1 and at most n - 1."""
    return 0 if fraction <= 0 else min(n - 1, max(1, math.ceil(n * fraction)))


@dataclass
class TrainingData:
    """What a run trains and selects on. The test pools are not here: training never reads them.

    validation: "labelled" (val/0 against val/1), "aucp_heldout" (held-out normals against unlabelled images
    held out of training), "aucp" (held-out normals against the unlabelled training set, the label-free AUC of
    Brainomaly (Siddiquee et al., WACV 2024)) or "none".
    """

    normal: ImageSet
    unlabeled: ImageSet
    val_normal: ImageSet | None
    val_positive: ImageSet | None
    validation: str
    skipped: list[str]  # every unreadable image left out with --skip-bad, of any pool

    def digests(self) -> dict[str, str]:
        """Content digest -> id of every image the run trains or selects on (for leakage checks)."""
        sets = (self.normal, self.unlabeled, self.val_normal, self.val_positive)
        return {d: i for s in sets if s is not None for d, i in zip(s.digests, s.ids, strict=True)}


def build_training_data(source: Source, cfg: Config, cache_dir: str | Path | None) -> TrainingData:
    """The protocol's training pools and validation data of `cfg` from `source` (never its test pools)."""
    data, seed, val_max = cfg.data, cfg.train.seed, cfg.evaluation.val_max_images
    pools = source.pools
    load = lambda ids, label: load_configured(source, ids, label, cfg, cache_dir)  # noqa: E731
    normal_ids = _draw(pools["train/0"], labeled_count(pools, data, str(source.root)), data.unlabeled_draw, seed + 2)
    n_normal, n_abnormal, n_unknown = unlabeled_counts(pools, data, str(source.root))
    if n_unknown:
        unlabeled = load(_draw(pools["train/unlabeled"], n_unknown, data.unlabeled_draw, seed), -1)
    else:
        parts = [
            load(_draw(pools.get("train/unlabeled/1", []), n_abnormal, data.unlabeled_draw, seed), 1),
            load(_draw(pools.get("train/unlabeled/0", []), n_normal, data.unlabeled_draw, seed + 1), 0),
        ]
        unlabeled = ImageSet.concat(*parts)

    cap = lambda s: s.subset(_cap_index(len(s), val_max)) if s is not None and len(s) > val_max else s  # noqa: E731
    skipped = list(unlabeled.skipped)
    if labelled_validation(pools, data, source.describe()):
        normal, val_0, val_1 = load(normal_ids, 0), load(pools["val/0"], 0), load(pools["val/1"], 1)
        skipped += normal.skipped + val_0.skipped + val_1.skipped
        val_normal, val_positive, validation = cap(val_0), cap(val_1), "labelled"
        warning = few_validation(len(val_0), len(val_1))
        if warning:
            log.warning("%s: validation: %s", source.describe(), warning)
    else:
        everything = load(normal_ids, 0)
        skipped += everything.skipped
        held = holdout_count(len(everything), data.val_fraction)
        order = torch.randperm(len(everything), generator=torch.Generator().manual_seed(HOLDOUT_SEED))
        normal = everything.subset(order[held:].sort().values)
        if held and len(unlabeled):
            val_normal = cap(everything.subset(order[:held].sort().values))
            unlabeled, val_positive, validation = _hold_out_unlabeled(unlabeled, data.val_unlabeled_fraction)
            val_positive = cap(val_positive)
        else:
            val_normal, val_positive, validation = None, None, "none"
    if len(normal) < 2:
        raise DataError(
            f"{source.describe()}: {len(normal)} labelled normal images left for training; at least 2 are needed"
        )
    return TrainingData(normal, unlabeled, val_normal, val_positive, validation, skipped)


def _hold_out_unlabeled(unlabeled: ImageSet, fraction: float) -> tuple[ImageSet, ImageSet, str]:
    """(training unlabelled, unlabelled for AUCp, validation kind).

    AUCp against images the adversarial loss trained on also rewards memorising them; images held out of
    training measure restoration alone. With no share held out, AUCp uses the training images (kind "aucp").
    """
    held = holdout_count(len(unlabeled), fraction) if len(unlabeled) > 1 else 0
    if not held:
        return unlabeled, unlabeled, "aucp"
    order = torch.randperm(len(unlabeled), generator=torch.Generator().manual_seed(HOLDOUT_SEED + 1))
    return unlabeled.subset(order[held:].sort().values), unlabeled.subset(order[:held].sort().values), "aucp_heldout"


def _cap_index(n: int, cap: int) -> Tensor:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    return order[:cap].sort().values


def load_split(source: Source, split: str, cfg: Config, cache_dir) -> ImageSet:
    """The labelled images of `split` ("test" or "val"), normals first; an error if either class is empty."""
    sets = []
    for label in (0, 1):
        ids = source.pools.get(f"{split}/{label}", [])
        if not ids:
            kind = "normal" if label == 0 else "abnormal"
            raise DataError(f"{source.describe()}: the {split} split has no {kind} images ({split}/{label} is empty)")
        sets.append(load_configured(source, ids, label, cfg, cache_dir))
    return ImageSet.concat(*sets)


def duplicates(evaluated: Mapping[str, str], training: Mapping[str, str]) -> list[tuple[str, str]]:
    """(evaluated name, training name) for each evaluated image whose bytes equal a training image's.

    Both sides map a content digest to the image's id (or path).
    """
    return [(name, training[digest]) for digest, name in evaluated.items() if digest in training]


def without_duplicates(images: ImageSet, training: Mapping[str, str]) -> tuple[ImageSet, list[str]]:
    """`images` less those byte-identical to a training image, and "name = training name" for each left out."""
    dropped = [f"{a} = {b}" for a, b in duplicates(dict(zip(images.digests, images.paths, strict=True)), training)]
    return images.subset([i for i, d in enumerate(images.digests) if d not in training]), dropped


def check_leakage(evaluated: Mapping[str, str], training: Mapping[str, str], what: str = "evaluation") -> None:
    """Refuse `what` images whose bytes are identical to a training or validation image, naming them."""
    clashes = duplicates(evaluated, training)
    if clashes:
        shown = "; ".join(f"{a} = {b}" for a, b in clashes[:SHOWN])
        raise DataError(
            f"{len(clashes)} {what} images are byte-identical to training or validation images (leakage): {shown}; "
            "remove them from one side, or evaluate with --drop-duplicates to leave them out of the metrics "
            "(metrics.json then lists them)"
        )
