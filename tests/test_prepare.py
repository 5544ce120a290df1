import json

import numpy as np
import pytest
from PIL import Image

from helpers import write_dicom
from medsagan.data.prepare import prepare, seeded_split
from medsagan.data.sources import open_dataset
from medsagan.errors import DataError


def rsna_raw(root, n_normal=12, n_opacity=9, n_other=3):
    rows = ["patientId,class"]
    rng = np.random.default_rng(0)
    for i in range(n_normal + n_opacity + n_other):
        pid = f"p{i:03d}"
        kind = (
            "Normal" if i < n_normal else "Lung Opacity" if i < n_normal + n_opacity else "No Lung Opacity / Not Normal"
        )
        rows += [f"{pid},{kind}"] * (2 if kind == "Lung Opacity" else 1)  # one row per box
        write_dicom(root / "stage_2_train_images" / f"{pid}.dcm", rng.integers(0, 256, (40, 40), dtype=np.uint8))
    (root / "stage_2_detailed_class_info.csv").write_text("\n".join(rows) + "\n")
    return root


def test_rsna_seeded_split_follows_the_benchmark_rule(tmp_path):
    counts = prepare("rsna", rsna_raw(tmp_path / "raw"), tmp_path / "out", size=32)
    # 12 normals and 9 opacities scale the benchmark (3851 / 1000 / 1000 of 8851 and 6012) down.
    assert counts["train/0"] == 5 and counts["test/0"] == 1 and counts["test/1"] == 1
    assert counts["train/unlabeled/0"] == 6 and counts["train/unlabeled/1"] == 8
    source = open_dataset(str(tmp_path / "out"))
    names = [n for ids in source.pools.values() for n in ids]
    assert len(names) == 21 and not any(n.startswith(("p021", "p022", "p023")) for n in names)
    image = Image.open(tmp_path / "out" / "images" / names[0])
    assert image.size == (32, 32) and image.mode == "L"
    again = prepare("rsna", tmp_path / "raw", tmp_path / "out2", size=32)
    assert (
        json.loads((tmp_path / "out2" / "data.json").read_text())
        == json.loads((tmp_path / "out" / "data.json").read_text())
        and again == counts
    )


def test_rsna_with_the_benchmark_split_file_and_missing_sources(tmp_path):
    raw = rsna_raw(tmp_path / "raw")
    split = {
        "train": {"0": ["p000.png", "p001.png"], "unlabeled": {"0": ["p002.png"], "1": ["p012.png"]}},
        "test": {"0": ["p003.png"], "1": ["p013.png"]},
    }
    (tmp_path / "split.json").write_text(json.dumps(split))
    counts = prepare("rsna", raw, tmp_path / "out", tmp_path / "split.json", size=32)
    assert counts == {"train/0": 2, "train/unlabeled/0": 1, "train/unlabeled/1": 1, "test/0": 1, "test/1": 1}
    split["test"]["1"].append("gone.png")
    (tmp_path / "split.json").write_text(json.dumps(split))
    with pytest.raises(DataError, match=r"1 of 7 listed images are missing: .*gone"):
        prepare("rsna", raw, tmp_path / "out3", tmp_path / "split.json", size=32)


def test_vindr_is_normal_only_when_every_reader_says_no_finding(tmp_path):
    raw = tmp_path / "raw"
    rows = ["image_id,class_name,class_id,rad_id"]
    labels = {}
    for i in range(30):
        image_id = f"v{i:02d}"
        names = ["No finding"] * 3 if i < 18 else ["No finding", "Nodule/Mass", "No finding"]
        rows += [f"{image_id},{name},0,R{j}" for j, name in enumerate(names)]
        labels[image_id] = int(i >= 18)
        pixels = np.linspace(0, 4095, 48 * 48).reshape(48, 48).astype(np.uint16)
        write_dicom(raw / "train" / f"{image_id}.dicom", pixels, "MONOCHROME1", bits_stored=12)
    (raw / "train.csv").write_text("\n".join(rows) + "\n")
    prepare("vindr", raw, tmp_path / "out", size=48)
    pools = open_dataset(str(tmp_path / "out")).pools
    assert all(labels[n[:-4]] == 0 for key in ("train/0", "test/0", "train/unlabeled/0") for n in pools[key])
    assert all(labels[n[:-4]] == 1 for key in ("test/1", "train/unlabeled/1") for n in pools[key])
    image = np.asarray(Image.open(tmp_path / "out" / "images" / pools["train/0"][0]))
    assert image[0, 0] == 255 and image[-1, -1] == 0  # MONOCHROME1 inverted, min-max to uint8


def test_lag_keeps_jpegs_and_splits_by_image_number(tmp_path):
    raw = tmp_path / "raw"
    for folder, ids in (("non_glaucoma", range(1, 21)), ("suspicious_glaucoma", range(21, 32))):
        (raw / folder / "image").mkdir(parents=True)
        for i in ids:
            Image.new("RGB", (20, 20), (i, 0, 0)).save(raw / folder / "image" / f"{i:04d}.jpg")
    prepare("lag", raw, tmp_path / "out")
    pools = open_dataset(str(tmp_path / "out")).pools
    assert pools["train/0"][0] == "0001.jpg" and pools["test/1"][0] == "0021.jpg"
    assert (tmp_path / "out" / "images" / "0001.jpg").read_bytes() == (
        raw / "non_glaucoma" / "image" / "0001.jpg"
    ).read_bytes()


def test_seeded_split_reproduces_benchmark_counts_at_full_size():
    labels = {f"n{i}": 0 for i in range(8851)} | {f"a{i}": 1 for i in range(6012)}
    pools = seeded_split("rsna", labels, seed=0)
    assert {k: len(v) for k, v in pools.items()} == {
        "train/0": 3851,
        "train/unlabeled/0": 4000,
        "train/unlabeled/1": 5012,
        "test/0": 1000,
        "test/1": 1000,
    }


def test_missing_label_file_is_named(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(DataError, match=r"stage_2_detailed_class_info\.csv: label file not found"):
        prepare("rsna", tmp_path / "raw", tmp_path / "out")


def test_a_second_prepare_verifies_and_repairs_its_own_folder_and_refuses_others(tmp_path):
    raw = rsna_raw(tmp_path / "raw")
    out = tmp_path / "out"
    prepare("rsna", raw, out, size=32)
    pools = json.loads((out / "data.json").read_text())
    listed = out / "images" / pools["train"]["0"][0]
    good = listed.read_bytes()
    # An abnormal image under a labelled normal's name is not what prepare wrote: it is converted again.
    listed.write_bytes((out / "images" / pools["test"]["1"][0]).read_bytes())
    prepare("rsna", raw, out, size=32)
    assert listed.read_bytes() == good

    with pytest.raises(DataError, match=r"prepared with other settings \(size 32 -> 64\)"):
        prepare("rsna", raw, out, size=64)
    with pytest.raises(DataError, match=r"prepared with other settings \(split"):
        prepare("rsna", raw, out, seed=1, size=32)

    foreign = tmp_path / "foreign"
    (foreign / "images").mkdir(parents=True)
    (foreign / "data.json").write_text("{}")
    with pytest.raises(DataError, match="already holds a Med-AD dataset that `data prepare` did not write"):
        prepare("rsna", raw, foreign, size=32)
    assert sorted(p.name for p in foreign.rglob("*")) == ["data.json", "images"]


def test_two_source_images_of_one_name_are_refused_by_name(tmp_path):
    raw = tmp_path / "raw"
    for folder in ("non_glaucoma", "suspicious_glaucoma"):
        (raw / folder).mkdir(parents=True)
        Image.new("RGB", (20, 20)).save(raw / folder / "0007.jpg")
    with pytest.raises(DataError, match=r"have the same name '0007'"):
        prepare("lag", raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()
