"""The pools every dataset source lists, and the base classes that decode them.

Every source lists the same pools of image ids and decodes any id to uint8 [C, S, S]:

    train/0             labelled normals
    train/unlabeled/0   pool of unlabelled normals (labels known only to build the protocol's set)
    train/unlabeled/1   pool of unlabelled abnormals
    train/unlabeled     unlabelled images whose labels nobody knows (folder layout)
    val/0, val/1        labelled validation images, when the dataset has them
    test/0, test/1      normal and abnormal test images
"""

import hashlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from .readers import load_resized, resize_uint8

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
SHOWN = 5


def halved_training_pools(normal: list[str], abnormal: list[str]) -> dict[str, list[str]]:
    """A fully labelled training split as the protocol's pools.

    The first half of the normals (the larger half when odd) are labelled; the rest, with every abnormal
    image, are the unlabelled pools.
    """
    half = (len(normal) + 1) // 2
    return {"train/0": normal[:half], "train/unlabeled/0": normal[half:], "train/unlabeled/1": abnormal}


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
