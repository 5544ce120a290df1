import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import average_precision_score, roc_auc_score

from helpers import make_folder_dataset, tiny_args, write_dicom, write_medad_split, write_png
from medsagan.cli import main
from medsagan.files import load_tensors

TINY = tiny_args(train={"validate_every": 4, "checkpoint_every": 4})


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    result = run("train", "--data", "synthetic", "--iterations", 8, "--out", out, "--no-progress", *TINY)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_data_check_json_on_real_pneumonia(shared_data):
    result = run("data", "check", shared_data / "medad-pneumonia64", "--json")
    report = json.loads(result.output)
    assert report["source"] == "medad"
    assert report["counts"] == {
        "train/0": 700,
        "train/unlabeled/0": 649,
        "train/unlabeled/1": 3883,
        "test/0": 234,
        "test/1": 390,
    }
    assert report["unlabeled_set"]["normal"] == 280 and report["unlabeled_set"]["abnormal"] == 420


@pytest.mark.slow
def test_data_check_on_a_split_file_without_images_is_one_clear_error(tmp_path):
    from medsagan.data.sources import read_split

    result = run("data", "check", write_medad_split(tmp_path / "RSNA", read_split("rsna")))
    assert result.exit_code == 2
    assert "all 14863 images listed in data.json are missing" in result.output
    assert "Traceback" not in result.output


def test_prepare_with_a_bundled_split_needs_no_split_file(tmp_path):
    (tmp_path / "raw" / "non_glaucoma").mkdir(parents=True)
    (tmp_path / "raw" / "suspicious_glaucoma").mkdir()
    result = run("data", "prepare", "lag", tmp_path / "raw", "--out", tmp_path / "out", "--split", "lag")
    assert result.exit_code == 2
    assert "4854 of 4854 listed images are missing" in result.stderr  # the benchmark's LAG split, shipped


def test_model_info_reports_the_paper_counts():
    info = json.loads(run("model-info", "--preset", "paper", "--json").output)
    assert info["generator_params"] == 44_758_979 and info["discriminator_params"] == 44_719_040
    assert info["input_shape"] == info["output_shape"] == [1, 1, 64, 64]


@pytest.mark.parametrize(
    "switch",
    [
        "--preset=fast",
        "--preset=baseline",
        "model.acm=false",
        "model.arrm=false",
        "model.channels=3",
        "model.patches=4",
    ],
)
def test_model_info_works_for_every_preset_and_switch(switch):
    result = run("model-info", "--json", switch)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["generator_params"] > 0


def test_unknown_config_key_names_the_nearest_one():
    result = run("model-info", "train.iteration=5")
    assert result.exit_code == 2
    assert "unknown config key train.iteration; did you mean train.iterations?" in result.output


@pytest.mark.slow
def test_dry_run_prints_config_and_data_summary(shared_data):
    result = run("train", "--data", shared_data / "medad-pneumonia64", "--preset", "fast", "--dry-run")
    assert result.exit_code == 0, result.output
    assert '"preset": "fast"' in result.output and "280 normal + 420 abnormal" in result.output


def test_evaluate_is_deterministic_and_writes_scores(trained):
    first = run("evaluate", trained, "--json")
    assert first.exit_code == 0, first.output
    metrics = json.loads(first.output)
    assert metrics["n_normal"] == metrics["n_abnormal"] == 8
    rows = list(csv.DictReader((trained / "evaluation" / "test" / "scores.csv").open()))
    assert len(rows) == 16 and {"id", "path", "label", "score", "prediction"} <= set(rows[0])
    labels, scores = [int(r["label"]) for r in rows], [float(r["score"]) for r in rows]
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)  # scores kept to 8 digits
    assert metrics["ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
    again = json.loads(run("evaluate", trained, "--json").output)
    assert again["auc"] == metrics["auc"]
    assert list(csv.DictReader((trained / "evaluation" / "test" / "scores.csv").open())) == rows
    assert "held-out" in metrics["checkpoint"]["selection"]


def test_official_scoring_is_labelled_as_such(trained):
    metrics = json.loads(run("evaluate", trained, "--official-scoring", "--json").output)
    assert metrics["scoring"].startswith("official scoring")
    assert (trained / "evaluation" / "test-official" / "metrics.json").is_file()

    def scores(folder):
        with open(trained / "evaluation" / folder / "scores.csv") as handle:
            return np.array([float(row["score"]) for row in csv.DictReader(handle)])

    official = scores("test-official")
    json.loads(run("evaluate", trained, "--json").output)
    plain = scores("test")
    assert official.shape == plain.shape and not np.allclose(official, plain)  # the random mask changes them


def test_predict_files_folders_and_dicoms(trained, tmp_path):
    write_png(tmp_path / "in" / "a.png", 120, size=40)
    write_png(tmp_path / "in" / "sub" / "b.png", 60, size=40)
    dicom = write_dicom(
        tmp_path / "c.dcm", np.linspace(0, 4095, 48 * 48).reshape(48, 48).astype(np.uint16), bits_stored=12
    )
    result = run("predict", trained, tmp_path / "in", dicom, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "out" / "predictions.csv").open()))
    assert [r["id"] for r in rows] == ["a.png", "b.png", "c.dcm"]
    assert all(r["prediction"] in ("normal", "abnormal") for r in rows)
    for r in rows:  # where each map points: a box inside the image
        x0, y0, x1, y1 = (float(r[f"where_{k}"]) for k in ("x0", "y0", "x1", "y1"))
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert sorted(p.name for p in (tmp_path / "out" / "panels").iterdir()) == ["a.png", "b.png", "c.png"]


def test_a_run_whose_weights_do_not_separate_the_validation_images_says_so_in_predict_and_evaluate(
    trained, tmp_path, caplog
):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy, ignore=shutil.ignore_patterns(".medsagan.lock", "evaluation"))
    calibration = json.loads((copy / "calibration.json").read_text())
    assert {"auc", "p_value", "normal", "positive", "above_chance"} <= set(calibration["separation"])
    calibration["separation"].update(auc=0.52, p_value=0.4)  # as a run on data it does not suit would end
    (copy / "calibration.json").write_text(json.dumps(calibration))
    write_png(tmp_path / "in" / "a.png", 120, size=40)
    with caplog.at_level("WARNING"):
        assert run("predict", copy, tmp_path / "in", "--out", tmp_path / "out").exit_code == 0
    assert "do not tell the validation images apart better than chance: AUC 0.520" in caplog.text
    evaluated = run("evaluate", copy)
    assert evaluated.exit_code == 0 and "p = 0.4)" in evaluated.output and "Likely causes" in evaluated.output


def test_predict_on_a_corrupt_file_is_one_error_or_skipped(trained, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"nope")
    write_png(tmp_path / "good.png", 90)
    failed = run("predict", trained, tmp_path / "bad.png", tmp_path / "good.png", "--out", tmp_path / "o1")
    assert failed.exit_code == 2 and "bad.png: unreadable or corrupt image" in failed.output
    skipped = run(
        "predict", trained, tmp_path / "bad.png", tmp_path / "good.png", "--out", tmp_path / "o2", "--skip-bad"
    )
    assert skipped.exit_code == 0 and "bad.png" in (tmp_path / "o2" / "skipped.txt").read_text()


def test_train_on_a_folder_dataset_from_the_cli(tmp_path):
    root = make_folder_dataset(tmp_path / "data", n=8, val=True)
    result = run("train", "--data", root, "--iterations", 4, "--out", tmp_path / "run", "--no-progress", *TINY)
    assert result.exit_code == 0, result.output
    assert json.loads(run("evaluate", tmp_path / "run", "--json").output)["n_normal"] == 4


@pytest.mark.slow
def test_killed_training_process_resumes_and_finishes(tmp_path):
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "medsagan.cli",
        "train",
        "--data",
        "synthetic",
        "--iterations",
        "40",
        "--out",
        str(out),
        "--no-progress",
        *TINY,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((out / "checkpoints").glob("state-*.pt")) and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "calibration.json").exists()
    for state in (out / "checkpoints").glob("state-*.pt"):
        load_tensors(state)  # every visible checkpoint is whole, whenever the kill came
    resumed = subprocess.run(
        [sys.executable, "-m", "medsagan.cli", "train", "--resume", str(out), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "calibration.json").is_file()
    assert (out / "checkpoints" / "state-00000040.pt").is_file()


def test_predict_smoothing_changes_the_drawn_heatmaps_only(trained, tmp_path):
    write_png(tmp_path / "in" / "a.png", np.random.default_rng(3).integers(0, 256, (40, 40), dtype=np.uint8))
    plain = run("predict", trained, tmp_path / "in", "--out", tmp_path / "plain")
    smooth = run("predict", trained, tmp_path / "in", "--out", tmp_path / "smooth", "--smooth", "1.5")
    assert plain.exit_code == 0 and smooth.exit_code == 0, smooth.output
    csv_of = lambda out: (tmp_path / out / "predictions.csv").read_text()  # noqa: E731
    assert csv_of("plain") == csv_of("smooth")  # the same scores and boxes
    panel_of = lambda out: (tmp_path / out / "panels" / "a.png").read_bytes()  # noqa: E731
    assert panel_of("plain") != panel_of("smooth")
    refused = run("predict", trained, tmp_path / "in", "--out", tmp_path / "bad", "--smooth", "-1")
    assert refused.exit_code == 2 and "--smooth" in refused.output
