"""Test helpers: the one tiny configuration, and real files (PNG layouts, Med-AD folders, DICOMs)."""

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, SecondaryCaptureImageStorage, generate_uid

from medsagan.cli import main
from medsagan.config import Config, load_config, merge

# The paper's architecture at width 4: the same modules, small enough for unit tests and CLI runs.
TINY = {
    "model": {"conv_dim": 4, "residual_blocks": 1, "d_conv_dim": 4, "image_size": 32},
    "train": {"batch_size": 4, "iterations": 6, "validate_every": 3, "checkpoint_every": 2, "log_every": 2},
    "data": {"path": "synthetic", "synthetic_count": 24},
}


def tiny_config(**sections) -> Config:
    """TINY on the CPU, with some keys of some sections changed: tiny_config(train={"iterations": 4})."""
    return load_config(overrides=merge(merge(TINY, {"train": {"device": "cpu"}}), sections))


def tiny_args(**sections) -> list[str]:
    """TINY (and changes to it) as the command line's KEY=VALUE overrides."""
    values = merge(TINY, sections)
    return [f"{section}.{key}={value}" for section, keys in values.items() for key, value in keys.items()]


def cli(*args):
    """`medsagan ARGS` in this process, its result (exit code, stdout, stderr)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def fails_in_one_line(result, *named, code=2):
    """The exit code, exactly one line on stderr naming each of `named`, and no traceback anywhere."""
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for text in named:
        assert str(text) in lines[0], lines[0]
    return lines[0]


def train_args(out, *extra, data="synthetic", iterations=4):
    """`medsagan train` arguments for a tiny run into `out` that validates and checkpoints every 2 iterations."""
    steps = ["--iterations", iterations] if iterations else []
    tiny = tiny_args(train={"validate_every": 2, "checkpoint_every": 2, "log_every": 50})
    return ["train", "--data", data, *steps, "--out", out, "--no-progress", *tiny, *extra]


def write_medad_split(root: Path, pools: dict[str, list[str]]) -> Path:
    """A Med-AD data.json at `root` listing `pools` (no images written)."""
    root.mkdir(parents=True, exist_ok=True)
    index = {
        "train": {
            "0": pools["train/0"],
            "unlabeled": {"0": pools["train/unlabeled/0"], "1": pools["train/unlabeled/1"]},
        },
        "test": {"0": pools["test/0"], "1": pools["test/1"]},
    }
    (root / "data.json").write_text(json.dumps(index))
    return root


def write_png(path: Path, value: int | np.ndarray, size: int = 16, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((size, size), value, dtype=np.uint8) if np.isscalar(value) else value
    Image.fromarray(array).convert(mode).save(path)
    return path


def blob_image(rng: np.random.Generator, size: int = 32, abnormal: bool = False) -> np.ndarray:
    """A smooth random background; abnormal images get a bright disc."""
    yy, xx = np.mgrid[:size, :size] / size
    image = 90 + 40 * np.sin(6 * xx + rng.uniform(0, 6)) * np.cos(4 * yy) + rng.normal(0, 4, (size, size))
    if abnormal:
        cy, cx = rng.uniform(0.3, 0.7, 2)
        image += 110 * (((yy - cy) ** 2 + (xx - cx) ** 2) < 0.02)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_folder_dataset(root: Path, n: int = 12, size: int = 32, val: bool = False, seed: int = 0) -> Path:
    """The folder layout: normal/, unlabeled/, test/{normal,abnormal}/ and optionally val/."""
    rng = np.random.default_rng(seed)
    plan = {"normal": (n, False), "test/normal": (n // 2, False), "test/abnormal": (n // 2, True)}
    if val:
        plan.update({"val/normal": (4, False), "val/abnormal": (4, True)})
    for folder, (count, abnormal) in plan.items():
        for i in range(count):
            write_png(root / folder / f"{folder.replace('/', '-')}-{i:03d}.png", blob_image(rng, size, abnormal))
    for i in range(n):
        write_png(root / "unlabeled" / f"u-{i:03d}.png", blob_image(rng, size, abnormal=i % 2 == 0))
    return root


def make_medad_dataset(root: Path, abnormal_unlabeled: int = 1, size: int = 32, seed: int = 0) -> Path:
    """A small Med-AD folder (images/ + data.json): 8 labelled normals, 8 + N unlabelled, 2 + 2 test images."""
    pools = {
        "train/0": [f"n{i}.png" for i in range(8)],
        "train/unlabeled/0": [f"u{i}.png" for i in range(8)],
        "train/unlabeled/1": [f"a{i}.png" for i in range(abnormal_unlabeled)],
        "test/0": ["t0.png", "t1.png"],
        "test/1": ["s0.png", "s1.png"],
    }
    write_medad_split(root, pools)
    rng = np.random.default_rng(seed)
    for key, names in pools.items():
        for name in names:
            write_png(root / "images" / name, blob_image(rng, size, abnormal=key.endswith("1")))
    return root


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    compressed: bool = False,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEG2000Lossless if compressed else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if compressed:
        ds.PixelData = encapsulate([b"\x00\x01" * 64])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
