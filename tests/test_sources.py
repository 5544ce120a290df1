import json
import shutil

import numpy as np
import pytest

from helpers import blob_image, make_folder_dataset, write_medad_split, write_png
from medsagan.config import DataConfig
from medsagan.data.check import inspect
from medsagan.data.dataset import unlabeled_counts
from medsagan.data.folders import ClassFolderSource, FolderSource
from medsagan.data.medmnist import MedMNISTSource
from medsagan.data.sources import open_dataset, read_split
from medsagan.errors import DataError


def test_medad_pneumonia64_counts_and_protocol(shared_data):
    source = open_dataset(str(shared_data / "medad-pneumonia64"))
    counts = {key: len(ids) for key, ids in source.pools.items()}
    assert counts == {"train/0": 700, "train/unlabeled/0": 649, "train/unlabeled/1": 3883, "test/0": 234, "test/1": 390}
    assert unlabeled_counts(source.pools, DataConfig()) == (280, 420, 0)


@pytest.mark.parametrize(
    ("name", "expected"), [("rsna", (1541, 2310, 0)), ("lag", (600, 900, 0)), ("vindr", (1600, 2400, 0))]
)
def test_protocol_on_the_benchmarks_bundled_split_files(name, expected):
    pools = read_split(name)
    assert unlabeled_counts(pools, DataConfig()) == expected


@pytest.mark.slow
@pytest.mark.parametrize(("name", "folder"), [("rsna", "RSNA"), ("vindr", "VinCXR"), ("lag", "LAG")])
def test_bundled_split_files_are_the_benchmarks_own(shared_data, name, folder):
    assert read_split(name) == read_split(shared_data / "medad-splits" / folder / "data.json")


def test_infeasible_ratio_is_refused_with_the_largest_that_works():
    with pytest.raises(DataError, match=r"largest ratio they can give at 1500 images is 0\.60"):
        unlabeled_counts(read_split("lag"), DataConfig(anomaly_ratio=0.8))
    rsna = read_split("rsna")
    assert unlabeled_counts(rsna, DataConfig(anomaly_ratio=0.0)) == (3851, 0, 0)
    assert unlabeled_counts(rsna, DataConfig(anomaly_ratio=0.8, unlabeled_size=1000)) == (200, 800, 0)


@pytest.mark.slow
def test_split_file_without_images_fails_saying_how_many_are_missing(tmp_path):
    write_medad_split(tmp_path, read_split("rsna"))  # a Med-AD root without its images
    with pytest.raises(DataError, match=r"all 14863 images listed in data.json are missing"):
        open_dataset(str(tmp_path))


def medad(tmp_path, lists):
    for names in _leaves(lists):
        for name in names:
            write_png(tmp_path / "images" / name, 100)
    (tmp_path / "data.json").write_text(json.dumps(lists))
    return tmp_path


def _leaves(node):
    if isinstance(node, list):
        yield node
    else:
        for value in node.values():
            yield from _leaves(value)


def valid_lists():
    return {
        "train": {"0": ["a.png", "b.png"], "unlabeled": {"0": ["c.png"], "1": ["d.png"]}},
        "test": {"0": ["e.png"], "1": ["f.png"]},
    }


def test_medad_missing_images_are_counted_and_listed(tmp_path):
    root = medad(tmp_path, valid_lists())
    (root / "images" / "b.png").unlink()
    (root / "images" / "f.png").unlink()
    with pytest.raises(DataError, match=r"2 of 6 listed images are missing: .*b\.png, .*f\.png"):
        open_dataset(str(root))


def test_medad_missing_key_and_leakage_and_empty_list(tmp_path):
    lists = valid_lists()
    del lists["train"]["unlabeled"]["1"]
    with pytest.raises(DataError, match=r"data\.json: missing key train\.unlabeled\.1"):
        open_dataset(str(medad(tmp_path / "a", lists)))
    lists = valid_lists()
    lists["test"]["0"].append("a.png")
    with pytest.raises(DataError, match=r"a\.png is in both train\.0 and test\.0 \(leakage\)"):
        open_dataset(str(medad(tmp_path / "b", lists)))
    lists = valid_lists()
    lists["test"]["1"] = []
    with pytest.raises(DataError, match=r"test\.1 is empty"):
        open_dataset(str(medad(tmp_path / "c", lists)))


def test_folder_layout_pools(tmp_path):
    root = make_folder_dataset(tmp_path, n=8, val=True)
    source = open_dataset(str(root))
    assert isinstance(source, FolderSource)
    counts = {key: len(ids) for key, ids in source.pools.items()}
    assert counts == {"train/0": 8, "train/unlabeled": 8, "val/0": 4, "val/1": 4, "test/0": 4, "test/1": 4}
    assert unlabeled_counts(source.pools, DataConfig()) == (0, 0, 8)


def test_folder_layout_with_known_unlabelled_labels(tmp_path):
    root = make_folder_dataset(tmp_path, n=10)
    for path in sorted((root / "unlabeled").iterdir()):
        target = root / "unlabeled" / ("abnormal" if int(path.stem[-3:]) % 2 == 0 else "normal")
        target.mkdir(exist_ok=True)
        shutil.move(path, target / path.name)
    source = open_dataset(str(root))
    assert len(source.pools["train/unlabeled/0"]) == 5 and len(source.pools["train/unlabeled/1"]) == 5
    assert unlabeled_counts(source.pools, DataConfig(unlabeled_size=5)) == (2, 3, 0)


def test_folder_layout_errors(tmp_path):
    root = make_folder_dataset(tmp_path / "a", n=4)
    (root / "abnormal").mkdir()
    with pytest.raises(DataError, match=r"unknown folder abnormal/; the folder layout has normal/, unlabeled/"):
        open_dataset(str(root))
    root = make_folder_dataset(tmp_path / "b", n=4)
    shutil.rmtree(root / "test" / "abnormal")
    with pytest.raises(DataError, match=r"test/abnormal: empty or missing"):
        open_dataset(str(root))
    root = make_folder_dataset(tmp_path / "c", n=4)
    (root / "normal" / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match=r"notes\.txt: unsupported file type \.txt"):
        open_dataset(str(root))
    root = make_folder_dataset(tmp_path / "d", n=4)
    for path in (root / "normal").iterdir():
        path.unlink()
    with pytest.raises(DataError, match=r"no labelled normal images"):
        open_dataset(str(root))


def test_unknown_layout_and_missing_path(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        open_dataset(str(tmp_path / "nope"))
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="not a dataset layout medsagan knows"):
        open_dataset(str(tmp_path / "x"))


def test_leakage_between_test_and_training_is_found_by_content(tmp_path):
    root = make_folder_dataset(tmp_path, n=4)
    shutil.copy(next((root / "test" / "normal").iterdir()), root / "normal" / "copy.png")
    with pytest.raises(DataError, match=r"validation images \(leakage\): .* = normal/copy\.png"):
        inspect(open_dataset(str(root)), DataConfig())


def test_corrupt_image_in_check_is_named_or_skipped(tmp_path):
    root = make_folder_dataset(tmp_path, n=4)
    (root / "normal" / "zz-broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"zz-broken\.png: unreadable or corrupt"):
        inspect(open_dataset(str(root)), DataConfig())
    report = inspect(open_dataset(str(root)), DataConfig(skip_bad=True))
    assert len(report["unreadable"]) == 1 and "zz-broken.png" in report["unreadable"][0]


def test_medmnist_pneumonia_mapping_and_split(shared_data):
    source = MedMNISTSource(shared_data / "pneumoniamnist" / "pneumoniamnist.npz")
    counts = {key: len(ids) for key, ids in source.pools.items()}
    assert counts == {
        "train/0": 607,
        "train/unlabeled/0": 607,
        "train/unlabeled/1": 3494,
        "val/0": 135,
        "val/1": 389,
        "test/0": 234,
        "test/1": 390,
    }


def test_medmnist_retina_and_breast_label_maps(shared_data):
    retina = MedMNISTSource(shared_data / "retinamnist" / "retinamnist.npz")
    assert len(retina.pools["test/0"]) == 174 and len(retina.pools["test/1"]) == 226  # grade 0 vs 1-4
    assert retina.decode(retina.pools["test/1"][0], 32, 3).shape == (3, 32, 32)
    breast = MedMNISTSource(shared_data / "breastmnist" / "breastmnist.npz")
    assert len(breast.pools["test/0"]) == 114 and len(breast.pools["test/1"]) == 42  # malignant abnormal


def test_medmnist_unknown_task_asks_for_it(tmp_path):
    path = tmp_path / "mine.npz"
    arrays = {
        f"{s}_{k}": np.zeros((4, 28, 28) if k == "images" else (4, 1), dtype=np.uint8)
        for s in ("train", "val", "test")
        for k in ("images", "labels")
    }
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=r"set data\.medmnist_task"):
        open_dataset(str(path))
    assert len(MedMNISTSource(path, "pneumoniamnist").pools["train/0"]) == 2


def test_check_reports_sizes_modes_and_intensity(tmp_path):
    for folder, count, value in (("normal", 3, 51), ("test/normal", 1, 102), ("test/abnormal", 1, 153)):
        for i in range(count):
            write_png(tmp_path / folder / f"{i}.png", value, size=20)
    write_png(tmp_path / "unlabeled" / "u.png", 204, size=30)
    report = inspect(open_dataset(str(tmp_path)), DataConfig())
    assert report["image_sizes"] == {"20x20": 5, "30x30": 1}
    assert report["image_modes"] == {"L": 6}
    assert report["intensity"]["grey"]["mean"] == pytest.approx((3 * 51 + 102 + 153 + 204) / 6 / 255, abs=1e-3)
    assert report["intensity"]["sampled_images"] == 6


def make_class_folders(root, normals=7, kinds=("PNEUMONIA",), per_kind=3, test=True):
    """Kermany's layout: train/NORMAL/, train/<kind>/ per abnormal class, test/ likewise."""
    rng = np.random.default_rng(0)
    splits = {"train": normals, "test": 2} if test else {"train": normals}
    for split, count in splits.items():
        for i in range(count):
            write_png(root / split / "NORMAL" / f"IM-{i:04d}.png", blob_image(rng))
        for kind in kinds:
            for i in range(per_kind if split == "train" else 2):
                write_png(root / split / kind / f"{kind.lower()}-{i}.png", blob_image(rng, abnormal=True))
    return root


def test_class_folders_split_train_normals_in_half_by_hash_and_merge_abnormal_classes(tmp_path):
    root = make_class_folders(tmp_path / "kermany", kinds=("bacteria", "virus"))
    source = open_dataset(str(root))
    assert isinstance(source, ClassFolderSource)
    counts = {key: len(ids) for key, ids in source.pools.items()}
    assert counts == {"train/0": 4, "train/unlabeled/0": 3, "train/unlabeled/1": 6, "test/0": 2, "test/1": 4}
    labelled, pooled = source.pools["train/0"], source.pools["train/unlabeled/0"]
    assert sorted(labelled + pooled) == [f"train/NORMAL/IM-{i:04d}.png" for i in range(7)]
    assert labelled != sorted(labelled + pooled)[:4]  # the half is not the names' first half
    assert "(normal: NORMAL/ 7; abnormal: bacteria/ 3, virus/ 3)" in source.describe()
    assert unlabeled_counts(source.pools, DataConfig(unlabeled_size=5)) == (2, 3, 0)
    renamed = tmp_path / "moved"
    shutil.copytree(root, renamed)
    assert open_dataset(str(renamed), "classes").pools["train/0"] == labelled  # fixed by name, not location


def test_class_folders_errors_name_the_folder_and_the_fix(tmp_path):
    root = make_class_folders(tmp_path / "a")
    (root / "train" / "NORMAL").rename(root / "train" / "healthy")
    with pytest.raises(
        DataError, match=r"a/train: needs exactly one folder named normal \(any case\).*found PNEUMONIA"
    ):
        open_dataset(str(root))
    root = make_class_folders(tmp_path / "b")
    shutil.rmtree(root / "test" / "PNEUMONIA")
    with pytest.raises(DataError, match=r"b/test: no abnormal class; add a folder beside NORMAL/"):
        open_dataset(str(root))
    root = make_class_folders(tmp_path / "c")
    write_png(root / "train" / "stray.png", 10)
    with pytest.raises(DataError, match=r"train/stray\.png: an image outside the class folders"):
        open_dataset(str(root))
    root = make_class_folders(tmp_path / "d")
    (root / "models").mkdir()
    with pytest.raises(DataError, match=r"unknown folder models/; the class-folder layout has train/, test/, val/"):
        open_dataset(str(root))
    root = make_class_folders(tmp_path / "e", normals=0)
    with pytest.raises(DataError, match=r"e/train: needs exactly one folder named normal"):
        open_dataset(str(root))
    (root / "train" / "NORMAL").mkdir()
    with pytest.raises(DataError, match=r"e/train/NORMAL: no images; it holds the labelled normals"):
        open_dataset(str(root))
