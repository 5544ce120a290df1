"""`data prepare`: the original public downloads -> the Med-AD layout (images/ + data.json).

The recipe is the benchmark's (caiyu6666/DDAD-ASR data/preprocess_cxr.py at b1b7d0f): chest X-ray DICOMs are
read raw, MONOCHROME1 is inverted, non-8-bit pixels are min-max scaled to uint8, and the image is resized
to 512 x 512 bilinear and saved as <DICOM name>.png. LAG fundus JPEGs are copied unchanged.

The output folder is prepare's own: a manifest records the settings and a digest of every image written, so
an interrupted run resumes where it stopped, while a folder made otherwise, or with other settings, is
refused rather than mixed into, and an image that is not what prepare wrote is converted again.
"""

import csv
import hashlib
import io
import json
import math
import re
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image

from ..errors import DataError
from ..files import atomic_write, atomic_write_text, contained
from .medad_split import read_split
from .readers import read_benchmark_dicom
from .source import missing_error

# Benchmark split sizes (Med-AD data.json files): labelled normals, normal test, abnormal test; the rest
# of each class goes to the unlabelled pools. Totals are the whole class as the benchmark uses it.
BENCHMARK = {
    "rsna": {"train/0": 3851, "test/0": 1000, "test/1": 1000, "normals": 8851, "abnormals": 6012},
    "vindr": {"train/0": 4000, "test/0": 1000, "test/1": 1000, "normals": 10606, "abnormals": 4394},
    "lag": {"train/0": 1500, "test/0": 811, "test/1": 811, "normals": 3143, "abnormals": 1711},
}
LAG_CLASSES = {"non_glaucoma": 0, "suspicious_glaucoma": 1}


def _read_csv(path: Path, needed: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"{path}: label file not found; it comes with the dataset's download")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or any(column not in rows[0] for column in needed):
        raise DataError(f"{path}: expected the columns {', '.join(needed)}")
    return rows


MANIFEST = ".medsagan-prepare.json"
CHUNK = 256  # images converted between two manifest updates: what an interruption can cost


def _unique(found: dict[str, Path], path: Path) -> None:
    """Add `path` under its stem, refusing a second file of the same name (its label would be ambiguous)."""
    if path.stem in found:
        raise DataError(
            f"{path} and {found[path.stem]} have the same name {path.stem!r}, so one would hide the other in the "
            "Med-AD folder; remove or rename one of them"
        )
    found[path.stem] = path


def _find(raw: Path, pattern: str, where: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(raw.rglob(pattern)):
        _unique(found, path)
    if not found:
        raise DataError(f"{raw}: no {pattern} files found; expected the {where}")
    return found


def rsna_labels(raw: Path) -> tuple[dict[str, int], dict[str, Path]]:
    """RSNA Pneumonia: "Normal" -> 0, "Lung Opacity" -> 1; "No Lung Opacity / Not Normal" is left out."""
    rows = _read_csv(raw / "stage_2_detailed_class_info.csv", ("patientId", "class"))
    labels = {r["patientId"]: {"Normal": 0, "Lung Opacity": 1}.get(r["class"], -1) for r in rows}
    return {k: v for k, v in labels.items() if v >= 0}, _find(raw, "*.dcm", "stage_2_train_images/*.dcm DICOMs")


def vindr_labels(raw: Path) -> tuple[dict[str, int], dict[str, Path]]:
    """VinDr-CXR: normal when every radiologist's row says "No finding", abnormal otherwise."""
    rows = _read_csv(raw / "train.csv", ("image_id", "class_name"))
    findings: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        findings[r["image_id"]].add(r["class_name"])
    labels = {image: int(names != {"No finding"}) for image, names in findings.items()}
    return labels, _find(raw, "*.dicom", "train/*.dicom DICOMs")


def lag_labels(raw: Path) -> tuple[dict[str, int], dict[str, Path]]:
    """LAG: non_glaucoma/ -> 0 and suspicious_glaucoma/ -> 1 (their image/ subfolder when present)."""
    labels, files = {}, {}
    for folder, label in LAG_CLASSES.items():
        base = raw / folder / "image" if (raw / folder / "image").is_dir() else raw / folder
        if not base.is_dir():
            raise DataError(f"{raw / folder}: missing; the LAG download has {' and '.join(LAG_CLASSES)} folders")
        for path in sorted(base.glob("*.jp*g")):
            _unique(files, path)
            labels[path.stem] = label
    return labels, files


READERS = {"rsna": rsna_labels, "vindr": vindr_labels, "lag": lag_labels}


def _numeric(stem: str) -> tuple[int, str]:
    digits = re.sub(r"\D", "", stem)
    return (int(digits) if digits else 0, stem)


def seeded_split(dataset: str, labels: dict[str, int], seed: int) -> dict[str, list[str]]:
    """The benchmark's split rule, with the benchmark's sizes.

    Normals go to train/0, test/0, then unlabelled/0; abnormals to test/1, then unlabelled/1. LAG is ordered
    by image number (the benchmark's exact rule), the others shuffled with `seed`.
    With fewer images than the benchmark, every count shrinks by the same factor.
    """
    plan = BENCHMARK[dataset]
    by_class = {c: sorted((k for k, v in labels.items() if v == c), key=_numeric) for c in (0, 1)}
    if dataset != "lag":
        rng = torch.Generator().manual_seed(seed)
        by_class = {
            c: [ids[i] for i in torch.randperm(len(ids), generator=rng).tolist()] for c, ids in by_class.items()
        }
    normals, abnormals = by_class[0], by_class[1]
    scale = min(1.0, len(normals) / plan["normals"], len(abnormals) / plan["abnormals"])
    take = {key: max(1, math.floor(plan[key] * scale)) for key in ("train/0", "test/0", "test/1")}
    if take["train/0"] + take["test/0"] > len(normals) or take["test/1"] > len(abnormals):
        raise DataError(f"{dataset}: {len(normals)} normal and {len(abnormals)} abnormal images are too few to split")
    n_train, n_test = take["train/0"], take["test/0"]
    return {
        "train/0": normals[:n_train],
        "train/unlabeled/0": normals[n_train + n_test :],
        "train/unlabeled/1": abnormals[take["test/1"] :],
        "test/0": normals[n_train : n_train + n_test],
        "test/1": abnormals[: take["test/1"]],
    }


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _convert(source: Path, target: Path, size: int, recorded: str | None) -> str:
    """Write `target` from `source` unless it is what an earlier run wrote (`recorded`); its digest."""
    if recorded is not None and target.is_file() and _digest(target.read_bytes()) == recorded:
        return recorded
    if source.suffix.lower() in (".jpg", ".jpeg"):
        data = source.read_bytes()
    else:
        image = Image.fromarray(read_benchmark_dicom(source)).convert("L").resize((size, size), Image.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
    atomic_write(target, lambda handle: handle.write(data))
    return _digest(data)


def _claim(out: Path, settings: dict) -> dict[str, str]:
    """The digests an earlier run of the same settings wrote into `out`; refuse a folder prepare does not own."""
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            earlier = json.loads(manifest.read_text())
            before, digests = earlier["settings"], dict(earlier["images"])
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{manifest} is damaged; delete the folder {out} and prepare again") from None
        if before != settings:
            changed = ", ".join(f"{k} {before.get(k)!r} -> {v!r}" for k, v in settings.items() if before.get(k) != v)
            raise DataError(
                f"{out} was prepared with other settings ({changed}); give a new --out, or the same settings "
                "to finish that folder"
            )
        return digests
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "a Med-AD dataset" if (out / "data.json").is_file() else "files"
        raise DataError(
            f"{out} already holds {what} that `data prepare` did not write; give an empty or new --out folder"
        )
    return {}


def _record(out: Path, settings: dict, digests: dict[str, str]) -> None:
    atomic_write_text(out / MANIFEST, json.dumps({"settings": settings, "images": digests}, indent=0))


def prepare(
    dataset: str,
    raw: str | Path,
    out: str | Path,
    split: str | Path | None = None,
    seed: int = 0,
    size: int = 512,
    workers: int = 8,
) -> dict[str, int]:
    """Convert `raw` into `out`/images + `out`/data.json. Returns the pool counts.

    A second call with the same settings finishes or verifies what the first wrote; other settings, or a
    folder that prepare did not write, are refused.
    """
    if dataset not in READERS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(READERS)}")
    raw, out = Path(raw), Path(out)
    if not raw.is_dir():
        raise DataError(f"{raw}: no such folder; point it at the unpacked {dataset} download")
    labels, files = READERS[dataset](raw)
    suffix = ".jpg" if dataset == "lag" else ".png"
    if split:
        pools = read_split(split)
        wanted = [Path(name).stem for names in pools.values() for name in names]
        missing = [raw / name for name in wanted if name not in files]
        if missing:
            raise missing_error(raw, missing, len(wanted))
    else:
        pools = {key: [stem + suffix for stem in stems] for key, stems in seeded_split(dataset, labels, seed).items()}
    where = str(split or "the split")
    split_text = json.dumps(pools, sort_keys=True)
    settings = {
        "dataset": dataset,
        "raw": str(raw.resolve()),
        "size": size if dataset != "lag" else None,
        "split": _digest(split_text.encode()),
    }
    digests = _claim(out, settings)
    _record(out, settings, digests)  # before the first image, so an interrupted run is recognised as ours
    names = [name for group in pools.values() for name in group]
    for start in range(0, len(names), CHUNK):
        chunk = names[start : start + CHUNK]
        jobs = [(files[Path(n).stem], contained(out / "images", n, where), size, digests.get(n)) for n in chunk]
        with ThreadPoolExecutor(workers) as pool:
            digests.update(zip(chunk, pool.map(lambda job: _convert(*job), jobs), strict=True))
        _record(out, settings, digests)
    index = {
        "train": {
            "0": pools["train/0"],
            "unlabeled": {"0": pools["train/unlabeled/0"], "1": pools["train/unlabeled/1"]},
        },
        "test": {"0": pools["test/0"], "1": pools["test/1"]},
    }
    atomic_write_text(out / "data.json", json.dumps(index, indent=1))
    return {key: len(names) for key, names in pools.items()}
