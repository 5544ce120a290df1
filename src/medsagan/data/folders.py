"""The folder layouts: normal/ + unlabeled/ for a user's own data, and train/ + test/ class folders."""

import hashlib
import os
from pathlib import Path

from ..errors import DataError
from .readers import SUFFIXES, is_dicom
from .source import Source, halved_training_pools

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


class FolderSource(Source):
    """The folder layout.

    normal/, unlabeled/ (flat, or normal/ + abnormal/ when known), test/{normal,abnormal}/, val/{normal,abnormal}/.
    """

    kind = "folder"
    layout = "the folder layout"

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

    @classmethod
    def _check_names(cls, folder: Path, allowed: tuple[str, ...], prefix: str) -> None:
        for entry in sorted(folder.iterdir()):
            if entry.is_dir() and not entry.name.startswith(".") and entry.name not in allowed:
                raise DataError(
                    f"{entry}: unknown folder {prefix}{entry.name}/; {cls.layout} has "
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


class ClassFolderSource(FolderSource):
    """A labelled dataset in class folders: train/, test/ and val/, each with normal/ and abnormal classes.

    The layout most labelled exports and public sets come in (Kermany's chest X-rays: train/NORMAL/,
    train/PNEUMONIA/, test/...). The folder named normal (any case) is the normal class and every other folder
    an abnormal one. As for MedMNIST, half the training normals are the labelled normals and the other half
    with every training abnormal the unlabelled pools; which half is fixed by a hash of each file's path, so
    that file naming (often by source or date) cannot decide it, and the pools keep that order because the
    protocol draws prefixes of them.
    """

    kind = "classes"
    layout = "the class-folder layout"

    def __init__(self, root: Path):
        Source.__init__(self, root)
        self._check_names(root, ("train", "test", "val"), "")
        self.classes: dict[str, tuple[str, list[str]]] = {}
        for split in ("train", "test", "val"):
            if (root / split).is_dir():
                self.classes[split] = self._classes(root / split, split)
        if "train" not in self.classes:
            raise DataError(f"{root / 'train'}: missing; the class-folder layout needs train/normal/ with images")
        listed = self._listed("train")
        self.class_counts = {name: len(items) for name, items in listed.items()}  # for describe()
        normal, abnormal = self._split("train", listed)
        if not normal:
            raise DataError(f"{root / 'train' / self.classes['train'][0]}: no images; it holds the labelled normals")
        self.pools.update(halved_training_pools(sorted(normal, key=_hashed), sorted(abnormal, key=_hashed)))
        for split in ("test", "val"):
            if split in self.classes:
                normal, abnormal = self._split(split, self._listed(split))
                self.pools.update({f"{split}/0": normal, f"{split}/1": abnormal})
                for name, images in ((self.classes[split][0], normal), ("the abnormal classes", abnormal)):
                    if not images:
                        raise DataError(f"{root / split}: no images in {name}; {split}/ needs both kinds")

    def _classes(self, folder: Path, split: str) -> tuple[str, list[str]]:
        """(the normal folder's name, the abnormal folders' names) of one split, or an error naming the fix."""
        loose = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if loose:
            raise DataError(
                f"{folder / loose[0]}: an image outside the class folders; put each image in {split}/normal/ or "
                f"in a folder named after its abnormal class"
            )
        names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        normal = [name for name in names if name.lower() == "normal"]
        if len(normal) != 1:
            found = ", ".join(names) or "none"
            raise DataError(
                f"{folder}: needs exactly one folder named normal (any case) for the normal class; found {found}"
            )
        abnormal = [name for name in names if name != normal[0]]
        if split != "train" and not abnormal:
            raise DataError(f"{folder}: no abnormal class; add a folder beside {normal[0]}/ with abnormal images")
        return normal[0], abnormal

    def _listed(self, split: str) -> dict[str, list[str]]:
        """The image ids of each class folder of one split."""
        normal, abnormal = self.classes[split]
        return {name: self._list(self.root / split / name) for name in (normal, *abnormal)}

    def _split(self, split: str, listed: dict[str, list[str]]) -> tuple[list[str], list[str]]:
        """(normal ids, abnormal ids) of one split: its normal folder, and every other folder's images."""
        normal, abnormal = self.classes[split]
        return listed[normal], [item for name in abnormal for item in listed[name]]

    def describe(self) -> str:
        """One line naming the dataset and which class folders of train/ are abnormal, with their images."""
        normal, abnormal = self.classes["train"]
        counts = self.class_counts
        kinds = ", ".join(f"{name}/ {counts[name]}" for name in abnormal) or "none in train/"
        return f"classes {self.root} (normal: {normal}/ {counts[normal]}; abnormal: {kinds})"


def _hashed(item: str) -> str:
    """The file's place in a fixed order unrelated to its name's sort order: SHA-1 of its path below its class."""
    return hashlib.sha1(item.split("/", 2)[-1].encode()).hexdigest()
