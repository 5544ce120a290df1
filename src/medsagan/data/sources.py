"""Dataset sources: the Med-AD layout and the built-in synthetic set, and the opener that detects a layout.

The pools every source lists are described in source.py; the folder layouts are in folders.py and
MedMNIST in medmnist.py.
"""

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from ..files import contained
from .folders import ClassFolderSource, FolderSource
from .medad_split import read_split
from .medmnist import MedMNISTSource
from .source import ArraySource, Source, missing_error

if TYPE_CHECKING:
    from ..config import Config


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
        elif (root / "train").is_dir():
            source = "classes"
        else:
            raise DataError(
                f"{root}: not a dataset layout medsagan knows. Expected a Med-AD folder (images/ and data.json), "
                "a folder layout (normal/, unlabeled/, test/normal/, test/abnormal/), class folders (train/normal/, "
                "train/<abnormal class>/, test/...) or a MedMNIST .npz file"
            )
    opener = {"medad": MedADSource, "folder": FolderSource, "classes": ClassFolderSource}
    if source == "medmnist":
        return MedMNISTSource(root, medmnist_task)
    if source in opener:
        if not root.is_dir():
            raise DataError(f"{root}: a {source} dataset is a folder, not a file")
        return opener[source](root)
    raise DataError(f"data.source {source!r} is unknown; choose auto, medad, folder, classes, medmnist or synthetic")
