"""Med-AD split files: a data.json beside images/, or a benchmark's split bundled with medsagan, checked."""

import gzip
import json
from pathlib import Path

from ..errors import DataError
from ..files import contained

MEDAD_KEYS = ("train/0", "train/unlabeled/0", "train/unlabeled/1", "test/0", "test/1")


# The benchmark's split files ship with medsagan (data/splits/NOTICE.md: source, commit and licence).
BUNDLED_SPLITS = {"rsna": "rsna.json.gz", "vindr": "vindr.json.gz", "lag": "lag.json.gz"}


def _split_text(index: str | Path) -> str:
    if str(index).lower() in BUNDLED_SPLITS:
        from importlib.resources import files

        return gzip.decompress(
            files(__package__).joinpath("splits", BUNDLED_SPLITS[str(index).lower()]).read_bytes()
        ).decode()
    try:
        return Path(index).read_text()
    except UnicodeDecodeError as err:
        raise DataError(f"{index}: not valid JSON ({err})") from None
    except OSError as err:
        raise DataError(
            f"{index}: cannot be read ({err.strerror or err}); give a data.json path or one of the bundled "
            f"benchmark splits: {', '.join(BUNDLED_SPLITS)}"
        ) from None


def _refuse_unknown_keys(index, split) -> None:
    """A key Med-AD does not define (a `val` list, a typo) would be ignored: say so instead."""
    known = {"train": {"0", "unlabeled"}, "test": {"0", "1"}}
    if not isinstance(split, dict):
        raise DataError(f"{index}: a Med-AD data.json is an object with train and test")
    extra = [key for key in split if key not in known]
    for section, keys in known.items():
        if isinstance(split.get(section), dict):
            extra += [f"{section}.{key}" for key in split[section] if key not in keys]
    if isinstance(split.get("train"), dict) and isinstance(split["train"].get("unlabeled"), dict):
        extra += [f"train.unlabeled.{key}" for key in split["train"]["unlabeled"] if key not in ("0", "1")]
    if extra:
        raise DataError(
            f"{index}: unknown key {extra[0]}; a Med-AD data.json holds only train.0, train.unlabeled.0, "
            "train.unlabeled.1, test.0 and test.1 (a labelled validation split needs the folder layout's val/)"
        )


def read_split(index: str | Path) -> dict[str, list[str]]:
    """The five lists of a Med-AD data.json: a path, or "rsna", "vindr", "lag" for the bundled splits.

    Checked: keys there, lists of names, disjoint, required ones non-empty, every name a relative path that
    stays inside the images folder.
    """
    try:
        split = json.loads(_split_text(index))
    except json.JSONDecodeError as err:
        raise DataError(f"{index}: not valid JSON ({err})") from None
    images = Path(index).parent / "images" if str(index).lower() not in BUNDLED_SPLITS else Path("images")
    _refuse_unknown_keys(index, split)
    pools = {}
    for key in MEDAD_KEYS:
        node = split
        for part in key.split("/"):
            if not isinstance(node, dict) or part not in node:
                raise DataError(
                    f"{index}: missing key {key.replace('/', '.')}; a Med-AD data.json holds "
                    "train.0, train.unlabeled.0, train.unlabeled.1, test.0 and test.1 (lists of file names)"
                )
            node = node[part]
        if not isinstance(node, list) or not all(isinstance(name, str) for name in node):
            raise DataError(f"{index}: {key.replace('/', '.')} must be a list of file names")
        pools[key] = list(node)
    for key in ("train/0", "test/0", "test/1"):
        if not pools[key]:
            raise DataError(f"{index}: {key.replace('/', '.')} is empty; Med-AD needs images in it")
    seen: dict[str, str] = {}
    for key, names in pools.items():
        for name in names:
            if name in seen:
                raise DataError(
                    f"{index}: {name} is in both {seen[name].replace('/', '.')} and {key.replace('/', '.')} "
                    "(leakage); each image must be in one list"
                )
            seen[name] = key
            contained(images, name, f"{index} ({key.replace('/', '.')})")
    return pools
