"""MedMNIST v2 .npz files as a source: labels mapped to normal / abnormal, train normals split in half."""

from pathlib import Path

import numpy as np

from ..errors import DataError
from .source import ArraySource, halved_training_pools

# MedMNIST label -> 0 normal / 1 abnormal (documented in docs/data.md), and the labels each file may hold.
MEDMNIST_LABELS = {"pneumoniamnist": range(2), "retinamnist": range(5), "breastmnist": range(2)}
MEDMNIST_TASKS = {
    "pneumoniamnist": lambda label: int(label == 1),  # 0 normal, 1 pneumonia
    "retinamnist": lambda label: int(label != 0),  # DR grade 0 normal, grades 1-4 abnormal
    "breastmnist": lambda label: int(label == 0),  # 1 normal+benign, 0 malignant
}


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
                self.pools.update(halved_training_pools(normal, abnormal))
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
