"""Lesion ground truth for localisation: a folder of masks, or the box files public chest X-ray sets publish.

Everything becomes one boolean mask per test image at the model's image size. Boxes are given in the
original image's pixels and scaled: NIH ChestX-ray14 (`BBox_List_2017.csv`) and RSNA Pneumonia
(`stage_2_train_labels.csv`) images are 1024 x 1024; VinDr-CXR (`train.csv`) images vary, so their sizes
come from a CSV (image_id,width,height) or from the test images' DICOM headers. Test images are matched by
file name without its extension; an entry that names no test image is an error, so is a box outside its
image.
"""

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.readers import SUFFIXES, is_dicom
from ..errors import DataError

FORMATS = ("nih", "rsna", "vindr")
PUBLISHED_SIZE = {"nih": 1024, "rsna": 1024}


@dataclass(frozen=True)
class GroundTruth:
    """Where the lesions of a test split are: a folder of masks, or a box file in one of FORMATS."""

    masks: Path | None = None
    boxes: Path | None = None
    boxes_format: str = ""
    original_sizes: Path | None = None

    def __post_init__(self):
        if self.masks is not None and self.boxes is not None:
            raise DataError("give lesion ground truth as either --masks DIR or --boxes FILE, not both")
        if self.masks is None and self.boxes is None:
            raise DataError("give the lesion ground truth itself: --masks DIR, or --boxes FILE with --boxes-format")
        if self.boxes is not None and self.boxes_format not in FORMATS:
            raise DataError(f"--boxes needs --boxes-format, one of {', '.join(FORMATS)}")

    def load(self, paths: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
        """(masks bool [N, size, size], has_truth bool [N]) for the test images `paths`."""
        if self.masks is not None:
            return folder_masks(self.masks, paths, size)
        sizes = read_sizes(self.original_sizes) if self.original_sizes else None
        return box_masks(read_boxes(self.boxes, self.boxes_format), paths, size, self.boxes_format, self.boxes, sizes)


@dataclass(frozen=True)
class Box:
    """A lesion box in the original image's pixels: left, top, right, bottom."""

    x0: float
    y0: float
    x1: float
    y1: float


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"{path}: no such box file; give the CSV the dataset publishes")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


def _number(row: dict[str, str], key: str, path: Path, line: int) -> float:
    try:
        value = float(row[key])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}, line {line}: column {key!r} is not a number ({row.get(key)!r})") from None
    if not math.isfinite(value):
        raise DataError(f"{path}, line {line}: column {key!r} is not a finite number")
    return value


def _require(rows: list[dict[str, str]], columns: tuple[str, ...], path: Path, fmt: str) -> None:
    missing = [c for c in columns if rows and c not in rows[0]]
    if not rows or missing:
        raise DataError(
            f"{path}: not a {fmt} file (no column {missing[0] if missing else columns[0]!r}); check --boxes-format"
        )


def read_boxes(path: str | Path, fmt: str) -> dict[str, list[Box]]:
    """Image name (without extension) -> its lesion boxes, from a box file in `fmt` ("nih", "rsna", "vindr")."""
    path = Path(path)
    if fmt not in FORMATS:
        raise DataError(f"--boxes-format {fmt!r} is unknown; choose one of {', '.join(FORMATS)}")
    rows = _rows(path)
    boxes: dict[str, list[Box]] = {}
    if fmt == "nih":
        # Image Index, Finding Label, then x, y, w, h under the header "Bbox [x,y,w,h]" and three empty names.
        for line, row in enumerate(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()[1:]), 2):
            if not row:
                continue
            try:
                x, y, w, h = (float(v) for v in row[2:6])
            except ValueError:
                raise DataError(f"{path}, line {line}: x, y, w, h are not numbers; check --boxes-format") from None
            boxes.setdefault(Path(row[0]).stem, []).append(Box(x, y, x + w, y + h))
        if not boxes:
            raise DataError(f"{path}: no boxes; give NIH's BBox_List_2017.csv")
        return boxes
    if fmt == "rsna":
        _require(rows, ("patientId", "x", "y", "width", "height", "Target"), path, "RSNA")
        for line, row in enumerate(rows, 2):
            if row["Target"].strip() != "1":
                continue
            x, y = _number(row, "x", path, line), _number(row, "y", path, line)
            w, h = _number(row, "width", path, line), _number(row, "height", path, line)
            boxes.setdefault(row["patientId"].strip(), []).append(Box(x, y, x + w, y + h))
        return boxes
    _require(rows, ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max"), path, "VinDr-CXR")
    for line, row in enumerate(rows, 2):
        if not row["x_min"].strip():  # "No finding": no box
            continue
        corners = (_number(row, k, path, line) for k in ("x_min", "y_min", "x_max", "y_max"))
        boxes.setdefault(row["image_id"].strip(), []).append(Box(*corners))
    return boxes


def read_sizes(path: str | Path) -> dict[str, tuple[int, int]]:
    """image_id -> (width, height) from a CSV with those three columns."""
    path = Path(path)
    rows = _rows(path)
    _require(rows, ("image_id", "width", "height"), path, "image-size")
    return {
        row["image_id"].strip(): (int(_number(row, "width", path, i)), int(_number(row, "height", path, i)))
        for i, row in enumerate(rows, 2)
    }


def _dicom_size(path: str) -> tuple[int, int] | None:
    if not is_dicom(Path(path)):
        return None
    import pydicom

    header = pydicom.dcmread(path, stop_before_pixels=True)
    return int(header.Columns), int(header.Rows)


def box_masks(
    boxes: dict[str, list[Box]],
    paths: list[str],
    size: int,
    fmt: str,
    source: Path,
    sizes: dict[str, tuple[int, int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(masks bool [N, size, size], has_truth bool [N]) for the test images `paths`, from `boxes`."""
    stems = [Path(p).stem for p in paths]
    unknown = sorted(set(boxes) - set(stems))
    if unknown:
        raise DataError(
            f"{source}: {len(unknown)} images named in it are not test images ({unknown[0]}, ...); give the box file "
            "of this test split, or check that the test images keep their published names"
        )
    masks = np.zeros((len(paths), size, size), dtype=bool)
    for index, (stem, path) in enumerate(zip(stems, paths, strict=True)):
        if stem not in boxes:
            continue
        width, height = _original_size(stem, path, fmt, source, sizes)
        for box in boxes[stem]:
            if not (0 <= box.x0 < box.x1 <= width and 0 <= box.y0 < box.y1 <= height):
                raise DataError(
                    f"{source}: the box of {stem} at ({box.x0:g}, {box.y0:g})-({box.x1:g}, {box.y1:g}) lies outside "
                    f"its {width} x {height} image"
                )
            x0, x1 = math.floor(box.x0 * size / width), math.ceil(box.x1 * size / width)
            y0, y1 = math.floor(box.y0 * size / height), math.ceil(box.y1 * size / height)
            masks[index, y0:y1, x0:x1] = True
    return masks, np.array([stem in boxes for stem in stems])


def _original_size(stem: str, path: str, fmt: str, source: Path, sizes) -> tuple[int, int]:
    if fmt in PUBLISHED_SIZE:
        return PUBLISHED_SIZE[fmt], PUBLISHED_SIZE[fmt]
    if sizes and stem in sizes:
        return sizes[stem]
    found = _dicom_size(path)
    if found is None:
        raise DataError(
            f"{source}: the original size of {stem} is not known (VinDr-CXR images vary); give --original-sizes "
            "FILE with columns image_id,width,height, or evaluate on the DICOM files"
        )
    return found


def folder_masks(folder: str | Path, paths: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(masks, has_truth) from mask images named like the test images; any non-zero pixel is a lesion."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--masks {folder}: no such folder; give the folder of lesion masks")
    files = {p.stem: p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix.lower() in SUFFIXES}
    stems = [Path(p).stem for p in paths]
    unknown = sorted(set(files) - set(stems))
    if unknown:
        raise DataError(
            f"--masks {folder}: {files[unknown[0]].name} names no test image; masks are named like the test images"
        )
    masks = np.zeros((len(paths), size, size), dtype=bool)
    for index, stem in enumerate(stems):
        if stem in files:
            try:
                with Image.open(files[stem]) as image:
                    grey = image.convert("L").resize((size, size), Image.NEAREST)
            except OSError as err:
                raise DataError(f"{files[stem]}: not a readable mask image ({err})") from None
            masks[index] = np.asarray(grey) > 0
    return masks, np.array([stem in files for stem in stems])


def with_normals(masks: np.ndarray, has_truth: np.ndarray, labels: np.ndarray, paths: list[str]) -> np.ndarray:
    """Every normal test image has ground truth (no lesion); a normal image with a lesion marked is an error."""
    marked = (labels == 0) & masks.any(axis=(1, 2))
    if marked.any():
        raise DataError(
            f"{paths[int(np.argmax(marked))]} is a normal test image, but the ground truth marks a lesion in it"
        )
    return has_truth | (labels == 0)
