"""Dataset sources: the Med-AD layout, a folder layout, MedMNIST .npz files and the built-in synthetic set.

Every source lists the same pools of image ids and decodes any id to uint8 [C, S, S]:

    train/0             labelled normals
    train/unlabeled/0   pool of unlabelled normals (labels known only to build the protocol's set)
    train/unlabeled/1   pool of unlabelled abnormals
    train/unlabeled     unlabelled images whose labels nobody knows (folder layout)
    val/0, val/1        labelled validation images, when the dataset has them
    test/0, test/1      normal and abnormal test images
"""

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from ..files import contained
from .medad_split import read_split
from .readers import SUFFIXES, is_dicom, load_resized, resize_uint8

if TYPE_CHECKING:
    from ..config import Config

POOLS = (
    "train/0",
    "train/unlabeled/0",
    "train/unlabeled/1",
    "train/unlabeled",
    "val/0",
    "val/1",
    "test/0",
    "test/1",
)
FOLDERS = {
    "normal": "train/0",
    "unlabeled": "train/unlabeled",
    "unlabeled/normal": "train/unlabeled/0",
    "unlabeled/abnormal": "train/unlabeled/1",
    "val/normal": "val/0",
    "val/abnormal": "val/1",
    "test/normal": "test/0",
    "test/abnormal": "test/1",
}
# MedMNIST label -> 0 normal / 1 abnormal (documented in the README), and the labels each file may hold.
MEDMNIST_LABELS = {"pneumoniamnist": range(2), "retinamnist": range(5), "breastmnist": range(2)}
MEDMNIST_TASKS = {
    "pneumoniamnist": lambda label: int(label == 1),  # 0 normal, 1 pneumonia
    "retinamnist": lambda label: int(label != 0),  # DR grade 0 normal, grades 1-4 abnormal
    "breastmnist": lambda label: int(label == 0),  # 1 normal+benign, 0 malignant
}
SHOWN = 5


def missing_error(where: Path, missing: list[Path], total: int) -> DataError:
    """One error for missing listed images: how many, the first few, and where they come from."""
    shown = ", ".join(str(p) for p in missing[:3])
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    return DataError(
        f"{where}: {len(missing)} of {total} listed images are missing: {shown}{more}. "
        "Put the images in place (for Med-AD, the benchmark archive's images/ folder) or fix the list."
    )


class Source:
    """Base: `pools` maps pool names to ids; `path_of`, `decode` and `digest` work on one id."""

    kind = ""

    def __init__(self, root: Path):
        self.root = root
        self.pools: dict[str, list[str]] = {}

    def path_of(self, item: str) -> Path | None:
        """The file behind an id (None for images held in memory)."""
        return self.root / item

    def decode(self, item: str, size: int, channels: int) -> np.ndarray:
        """The image `item` as uint8 [channels, size, size]."""
        return load_resized(self.path_of(item), size, channels)

    def digest(self, item: str) -> str:
        """SHA-1 of the image's bytes: the same content gives the same digest, whatever its name."""
        return hashlib.sha1(self.path_of(item).read_bytes()).hexdigest()

    def stamp(self, item: str) -> str:
        """Cheap identity of an item's current content for the cache key: size and modification time."""
        stat = self.path_of(item).stat()
        return f"{item}:{stat.st_size}:{stat.st_mtime_ns}"

    def lesion_masks(self, ids: list[str]) -> np.ndarray | None:
        """Lesion masks of images `ids` when the source knows them (bool [N, S, S]); None for real data."""
        return None

    def describe(self) -> str:
        """One line naming the dataset, for logs and reports."""
        return f"{self.kind} {self.root}"


class MedADSource(Source):
    """`ROOT/images/<name>` + `ROOT/data.json` with lists train.0, train.unlabeled.{0,1}, test.{0,1}."""

    kind = "medad"

    def __init__(self, root: Path):
        super().__init__(root)
        self.pools = read_split(root / "data.json")
        images = root / "images"
        listed = [contained(images, name, str(root / "data.json")) for names in self.pools.values() for name in names]
        if not images.is_dir():
            raise DataError(
                f"{root}: no images/ folder, so all {len(listed)} images listed in data.json are missing. "
                "Put the images in images/ (for the benchmark: the Med-AD archive, or `medsagan data prepare`)"
            )
        missing = [path for path in listed if not path.is_file()]
        if missing:
            raise missing_error(root, missing, len(listed))

    def path_of(self, item: str) -> Path:
        """Med-AD ids are file names inside images/."""
        return self.root / "images" / item


class FolderSource(Source):
    """The folder layout.

    normal/, unlabeled/ (flat, or normal/ + abnormal/ when known), test/{normal,abnormal}/, val/{normal,abnormal}/.
    """

    kind = "folder"

    def __init__(self, root: Path):
        super().__init__(root)
        self._check_names(root, ("normal", "unlabeled", "test", "val"), "")
        for sub in ("test", "val"):
            if (root / sub).is_dir():
                self._check_names(root / sub, ("normal", "abnormal"), f"{sub}/")
        unlabeled = root / "unlabeled"
        split_unlabeled = (unlabeled / "normal").is_dir() or (unlabeled / "abnormal").is_dir()
        for folder, pool in FOLDERS.items():
            if folder.startswith("unlabeled") and (folder == "unlabeled") == split_unlabeled:
                continue
            path = root / folder
            if path.is_dir():
                self.pools[pool] = self._list(path)
        if split_unlabeled:
            self._check_names(unlabeled, ("normal", "abnormal"), "unlabeled/")
            loose = [p.name for p in unlabeled.iterdir() if p.is_file() and not p.name.startswith(".")]
            if loose:
                raise DataError(
                    f"{unlabeled}: holds both files ({loose[0]}, ...) and normal/ or abnormal/ folders; "
                    "put all unlabelled images directly in unlabeled/, or all of them in its two subfolders"
                )
        if not self.pools.get("train/0"):
            raise DataError(
                f"{root / 'normal'}: no labelled normal images; the folder layout needs normal/ with images"
            )
        for parent in ("test", "val"):
            if (root / parent).is_dir():
                for label, cls in (("0", "normal"), ("1", "abnormal")):
                    if not self.pools.get(f"{parent}/{label}"):
                        raise DataError(
                            f"{root / parent / cls}: empty or missing; {parent}/ needs normal/ and abnormal/"
                        )

    @staticmethod
    def _check_names(folder: Path, allowed: tuple[str, ...], prefix: str) -> None:
        for entry in sorted(folder.iterdir()):
            if entry.is_dir() and not entry.name.startswith(".") and entry.name not in allowed:
                raise DataError(
                    f"{entry}: unknown folder {prefix}{entry.name}/; the folder layout has "
                    f"{', '.join(prefix + name + '/' for name in allowed)}"
                )

    def _list(self, folder: Path) -> list[str]:
        items = []
        paths = sorted(_files_below(folder))
        for path in paths:
            if path.suffix.lower() not in SUFFIXES and not (path.suffix == "" and is_dicom(path)):
                raise DataError(
                    f"{path}: unsupported file type {path.suffix or '(none)'}; images must be "
                    f"{', '.join(SUFFIXES)} or DICOM; move other files out of the image folders"
                )
            items.append(path.relative_to(self.root).as_posix())
        return items


def _files_below(folder: Path) -> list[Path]:
    """Every file below `folder`, linked sub-folders followed; a broken or looping link is an error by name."""
    found, seen = [], set()
    for top, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            raise DataError(f"{top}: a link loop (it leads back to {real}); remove the link")
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            path = Path(top) / name
            if name.startswith("."):
                continue
            if path.is_symlink() and not path.exists():
                raise DataError(
                    f"{path}: a broken link (its target {os.readlink(path)} does not exist); fix or remove it"
                )
            found.append(path)
        for name in dirs:
            path = Path(top) / name
            if path.is_symlink() and not path.exists():
                raise DataError(
                    f"{path}: a broken link (its target {os.readlink(path)} does not exist); fix or remove it"
                )
    return found


class ArraySource(Source):
    """Images held in memory as uint8 arrays [N, H, W] or [N, H, W, 3]; ids are "<array>:<index>"."""

    def __init__(self, root: Path, arrays: dict[str, np.ndarray]):
        super().__init__(root)
        self.arrays = arrays

    def _array(self, item: str) -> np.ndarray:
        name, index = item.rsplit(":", 1)
        return self.arrays[name][int(index)]

    def path_of(self, item: str) -> None:
        """In-memory images have no file."""
        return None

    def decode(self, item: str, size: int, channels: int) -> np.ndarray:
        """The image `item` as uint8 [channels, size, size]."""
        return resize_uint8(np.ascontiguousarray(self._array(item)), size, channels)

    def digest(self, item: str) -> str:
        """SHA-1 of the image's bytes: the same content gives the same digest, whatever its name."""
        return hashlib.sha1(np.ascontiguousarray(self._array(item)).tobytes()).hexdigest()

    def stamp(self, item: str) -> str:
        """In-memory images are identified by their id alone."""
        return item


class MedMNISTSource(ArraySource):
    """A MedMNIST v2 .npz file.

    Train normals are split in half (labelled / unlabelled pool), train abnormals are unlabelled, val and test
    keep their labels.
    """

    kind = "medmnist"

    def __init__(self, path: Path, task: str = ""):
        if path.is_dir():
            raise DataError(
                f"{path} is a folder, not a MedMNIST .npz file; give the .npz file, or data.source=auto to read the "
                "folder as what it is"
            )
        try:
            with np.load(path) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except Exception as err:  # numpy and zipfile raise many kinds for a torn or foreign file
            raise DataError(
                f"{path}: not a readable .npz file, truncated or corrupt ({type(err).__name__}: {err}); "
                "download it again"
            ) from None
        super().__init__(path, {})
        task = task or next((name for name in MEDMNIST_TASKS if name in path.name.lower()), "")
        if task not in MEDMNIST_TASKS:
            raise DataError(
                f"{path}: cannot tell which MedMNIST dataset this is; set data.medmnist_task to one of "
                f"{', '.join(MEDMNIST_TASKS)}"
            )
        to_binary = MEDMNIST_TASKS[task]
        self.task = task
        for split in ("train", "val", "test"):
            if f"{split}_images" not in arrays or f"{split}_labels" not in arrays:
                raise DataError(f"{path}: missing key {split}_images or {split}_labels; MedMNIST files have both")
            images, labels = arrays[f"{split}_images"], np.asarray(arrays[f"{split}_labels"]).reshape(-1)
            self._check_arrays(path, split, task, images, labels)
            self.arrays[split] = images
            binary = np.array([to_binary(int(v)) for v in labels])
            normal = [f"{split}:{i}" for i in np.flatnonzero(binary == 0)]
            abnormal = [f"{split}:{i}" for i in np.flatnonzero(binary == 1)]
            if split == "train":
                half = (len(normal) + 1) // 2
                self.pools.update(
                    {"train/0": normal[:half], "train/unlabeled/0": normal[half:], "train/unlabeled/1": abnormal}
                )
            else:
                self.pools.update({f"{split}/0": normal, f"{split}/1": abnormal})
        if not self.pools["train/0"]:
            raise DataError(f"{path}: no normal training images")

    @staticmethod
    def _check_arrays(path: Path, split: str, task: str, images: np.ndarray, labels: np.ndarray) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
            raise DataError(
                f"{path}: {split}_images must be uint8 [N, H, W] or [N, H, W, 3], got {images.dtype} "
                f"{list(images.shape)}"
            )
        if len(images) != len(labels):
            raise DataError(
                f"{path}: {split}_images holds {len(images)} images but {split}_labels {len(labels)} labels; "
                "they must match one to one"
            )
        allowed = MEDMNIST_LABELS[task]
        if not np.issubdtype(labels.dtype, np.integer) and not np.all(np.mod(labels, 1) == 0):
            raise DataError(f"{path}: {split}_labels must be whole numbers, got {labels.dtype}")
        outside = sorted({int(v) for v in labels if int(v) not in allowed})
        if outside:
            raise DataError(
                f"{path}: {split}_labels holds {outside[:5]}, outside {task}'s labels "
                f"{allowed.start}..{allowed.stop - 1}; is data.medmnist_task right?"
            )

    def describe(self) -> str:
        """One line naming the dataset, for logs and reports."""
        return f"medmnist ({self.task}) {self.root}"


class SyntheticSource(ArraySource):
    """The built-in synthetic chest-radiograph-like dataset (medsagan.data.synthetic), in the Med-AD pools."""

    kind = "synthetic"

    def __init__(self, count: int, size: int, seed: int = 0):
        from .synthetic import synthetic_data

        super().__init__(Path("synthetic"), {})
        pools, masks = synthetic_data(count, size, seed)
        for pool, images in pools.items():
            self.arrays[pool] = images
            self.pools[pool] = [f"{pool}:{i}" for i in range(len(images))]
        self.masks = {f"{pool}:{i}": mask for pool in ("test/0", "test/1") for i, mask in enumerate(masks[pool])}
        self.count, self.size, self.seed = count, size, seed

    def lesion_masks(self, ids: list[str]) -> np.ndarray:
        """The known lesion masks of test images `ids`, bool [N, size, size] (empty for normal images)."""
        return np.stack([self.masks[item] for item in ids])

    def describe(self) -> str:
        """One line naming the dataset, for logs and reports."""
        return f"synthetic (seed {self.seed}, {self.count} per pool, {self.size} px)"


def open_source(cfg: "Config") -> Source:
    """The dataset a configuration names (data.path, data.source, ...)."""
    data = cfg.data
    return open_dataset(data.path, data.source, data.medmnist_task, data.synthetic_count, cfg.model.image_size)


def open_dataset(
    path: str, source: str = "auto", medmnist_task: str = "", synthetic_count: int = 600, image_size: int = 64
) -> Source:
    """Detect the layout of `path` (or use `source`) and open it, with a clear error if it fits none."""
    if source == "synthetic" or (source == "auto" and path == "synthetic"):
        return SyntheticSource(synthetic_count, image_size)
    if not path:
        raise DataError("no dataset given; set data.path (or --data) to a dataset folder or .npz file")
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(
            f"{root}: no such file or folder; give the dataset's path (`medsagan train --data PATH`, or "
            "`medsagan evaluate RUN --data PATH` when a trained run's dataset has moved)"
        )
    if source == "auto":
        if root.is_file() and root.suffix == ".npz":
            source = "medmnist"
        elif (root / "data.json").is_file():
            source = "medad"
        elif (root / "normal").is_dir():
            source = "folder"
        else:
            raise DataError(
                f"{root}: not a dataset layout medsagan knows. Expected a Med-AD folder (images/ and data.json), "
                "a folder layout (normal/, unlabeled/, test/normal/, test/abnormal/) or a MedMNIST .npz file"
            )
    opener = {"medad": MedADSource, "folder": FolderSource}
    if source == "medmnist":
        return MedMNISTSource(root, medmnist_task)
    if source in opener:
        if not root.is_dir():
            raise DataError(f"{root}: a {source} dataset is a folder, not a file")
        return opener[source](root)
    raise DataError(f"data.source {source!r} is unknown; choose auto, medad, folder, medmnist or synthetic")
