"""Bad data files: each ends in one clear line naming the file, and `data check` agrees with `train`.
Numbers refer to the points of the reliability issue, as in test_reliability.py."""

import json

import numpy as np
import pytest

from helpers import cli, fails_in_one_line, make_folder_dataset, train_args, write_dicom, write_png

# 7. No unlabelled images ----------------------------------------------------------------------------------


def test_folder_layout_without_unlabelled_recommends_0u_and_trains_with_it(tmp_path):
    data = make_folder_dataset(tmp_path / "data", n=8)
    for path in (data / "unlabeled").iterdir():
        path.unlink()
    fails_in_one_line(cli(*train_args(tmp_path / "run", data=data)), "data.unlabeled_size=0", "unlabeled/")
    (data / "unlabeled").rmdir()
    report = json.loads(cli("data", "check", data, "--json").output)  # a report: it lists the problem
    assert "data.unlabeled_size=0" in report["unlabeled_set"]["error"]
    result = cli(*train_args(tmp_path / "run", "data.unlabeled_size=0", data=data))
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "data.json").read_text())
    assert summary["unlabeled"] == {"normal": 0, "abnormal": 0, "unknown": 0}


# 8. data check agrees with train ----------------------------------------------------------------------------


def truncated_png(path):
    write_png(path, np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-200])
    return path


@pytest.mark.parametrize("kind", ["truncated-png", "text-as-dcm", "dicom-without-pixels"])
def test_data_check_and_train_reject_the_same_bad_files(tmp_path, kind):
    data = make_folder_dataset(tmp_path / "data", n=8)
    bad = data / "normal" / {"truncated-png": "bad.png"}.get(kind, "bad.dcm")
    if kind == "truncated-png":
        truncated_png(bad)
    elif kind == "text-as-dcm":
        bad.write_text("this is a text file, not a DICOM\n")
    else:
        write_dicom(bad, np.zeros((16, 16), np.uint8))
        import pydicom

        ds = pydicom.dcmread(bad)
        del ds.PixelData
        ds.save_as(bad)
    checked = fails_in_one_line(cli("data", "check", data), "bad.")
    trained = fails_in_one_line(cli(*train_args(tmp_path / "run", data=data)), "bad.")
    assert checked == trained
    report = json.loads(cli("data", "check", data, "--skip-bad", "--json").output)
    assert len(report["unreadable"]) == 1 and "bad." in report["unreadable"][0]


# 10. MedMNIST files ---------------------------------------------------------------------------------------


def medmnist(path, **changes):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 4), ("test", 6)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1)
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


def test_truncated_or_inconsistent_medmnist_files_are_one_line(tmp_path):
    good = medmnist(tmp_path / "pneumoniamnist.npz")
    assert cli("data", "check", good).exit_code == 0
    torn = tmp_path / "torn_pneumoniamnist.npz"
    torn.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    fails_in_one_line(cli("data", "check", torn), "torn_pneumoniamnist.npz", "truncated or corrupt")
    short = medmnist(tmp_path / "short_pneumoniamnist.npz", train_labels=np.zeros((5, 1), int))
    fails_in_one_line(cli("data", "check", short), "train_images holds 12 images but train_labels 5")
    wrong = medmnist(tmp_path / "wrong_pneumoniamnist.npz", test_labels=np.array([[0], [1], [7], [1], [0], [3]]))
    fails_in_one_line(cli("data", "check", wrong), "test_labels holds [3, 7]", "pneumoniamnist")


# 13. --skip-bad records every skipped image ---------------------------------------------------------------


def test_skip_bad_records_skipped_labelled_normals_too(tmp_path):
    data = make_folder_dataset(tmp_path / "data", n=10)
    truncated_png(data / "normal" / "torn-normal.png")
    truncated_png(data / "unlabeled" / "torn-unlabelled.png")
    result = cli(*train_args(tmp_path / "run", "--skip-bad", data=data))
    assert result.exit_code == 0, result.output
    skipped = json.loads((tmp_path / "run" / "data.json").read_text())["skipped_images"]
    assert sorted(s.split(":")[0].rsplit("/", 1)[-1] for s in skipped) == ["torn-normal.png", "torn-unlabelled.png"]
