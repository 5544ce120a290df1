"""Hostile and careless input: each case ends in one clear line (or the right behaviour), never a traceback,
and nothing outside the folder it belongs to changes. Numbers refer to the points of the reliability issue."""

import csv
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import TINY as TINY_SECTIONS
from helpers import cli, fails_in_one_line, make_folder_dataset, tiny_config, train_args, write_png
from medsagan.config import merge
from medsagan.data.readers import MAX_PIXELS
from medsagan.files import RunLock, load_tensors


def snapshot(root):
    """Every file's modification time (the run lock's bookkeeping aside)."""
    files = (p for p in sorted(root.rglob("*")) if p.is_file() and p.name != RunLock.NAME)
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in files}


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A tiny run trained on a folder dataset (for the predict and checkpoint cases)."""
    base = tmp_path_factory.mktemp("reliability")
    data = make_folder_dataset(base / "data", n=8)
    result = cli(*train_args(base / "run", data=data))
    assert result.exit_code == 0, result.output
    return base / "run", data


# 1. One writer per run folder ------------------------------------------------------------------------------


def subprocess_train(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "medsagan.cli", *map(str, args)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_second_writer_is_refused_naming_the_holder_and_the_first_run_is_whole(tmp_path):
    out = tmp_path / "run"
    first = subprocess_train(*train_args(out, "train.validate_every=20", "train.checkpoint_every=20", iterations=400))
    deadline = time.time() + 120
    while not (out / "best.pt").is_file() and first.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert first.poll() is None, first.communicate()
    second = subprocess_train(*train_args(out, iterations=400))
    third = subprocess_train("train", "--resume", out, "--no-progress")
    reader = cli("evaluate", out, "--json")  # reading while the run trains is allowed
    outputs = [process.communicate(timeout=300) for process in (second, third)]
    assert first.poll() is None, "the first run ended before the others tried; the test proves nothing"
    for process, (_, stderr) in zip((second, third), outputs, strict=True):
        assert process.returncode == 2
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and f"(pid {first.pid})" in lines[0], stderr
    assert reader.exit_code == 0, reader.output
    assert json.loads(reader.output)["checkpoint"]["iteration"] > 0
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    records = [json.loads(line)["iteration"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert records == sorted(records) and records[-1] == 400
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["selection"]["iteration"] == load_tensors(out / "best.pt")["iteration"]


def test_a_calibration_of_other_weights_is_never_paired_with_best_pt(folder_run, tmp_path):
    import shutil

    from medsagan.runs import RunDir

    run = RunDir(tmp_path / "copy")
    shutil.copytree(folder_run[0], run.path)
    _, selection = run.load_best()
    assert run.load_calibration(selection).selection == selection
    calibration = json.loads(run.calibration.read_text())
    calibration["selection"]["iteration"] += 1000  # as if best.pt moved on while a resumed run trains
    run.calibration.write_text(json.dumps(calibration))
    assert run.load_calibration(selection) is None


# 2. Nothing written or read outside its folder -------------------------------------------------------------


def test_medad_names_that_leave_images_are_refused(tmp_path):
    root = tmp_path / "medad"
    for name in ("a.png", "b.png", "c.png", "d.png"):
        write_png(root / "images" / name, 100)
    write_png(tmp_path / "secret.png", 1)
    split = {"train": {"0": ["a.png", "../../secret.png"], "unlabeled": {"0": [], "1": ["b.png"]}}}
    split["test"] = {"0": ["c.png"], "1": ["d.png"]}
    (root / "data.json").write_text(json.dumps(split))
    fails_in_one_line(cli("data", "check", root), "'../../secret.png'", "outside")
    split["train"]["0"] = ["a.png", "/etc/passwd"]
    (root / "data.json").write_text(json.dumps(split))
    fails_in_one_line(cli("data", "check", root), "'/etc/passwd'", "outside")


def test_prepare_refuses_split_names_that_escape_out(tmp_path):
    raw = tmp_path / "raw"
    for folder, label in (("non_glaucoma", "n"), ("suspicious_glaucoma", "s")):
        (raw / folder / "image").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(raw / folder / "image" / f"{label}{i}.jpg")
    split = {
        "train": {"0": ["n0.jpg", "../../../escaped/n1.jpg"], "unlabeled": {"0": ["n2.jpg"], "1": ["s0.jpg"]}},
        "test": {"0": ["n3.jpg"], "1": ["s1.jpg"]},
    }
    (tmp_path / "split.json").write_text(json.dumps(split))
    before = snapshot(tmp_path)
    result = cli(
        "data", "prepare", "lag", raw, "--out", tmp_path / "a" / "b" / "out", "--split", tmp_path / "split.json"
    )
    fails_in_one_line(result, "split.json", "'../../../escaped/n1.jpg'")
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "escaped").exists()


# 3. predict --out into a dataset, and formula injection -----------------------------------------------------


def test_predict_refuses_an_out_inside_the_training_data_or_holding_images(folder_run, tmp_path):
    run, data = folder_run
    image = write_png(tmp_path / "in" / "x.png", 100, size=32)
    before = snapshot(data)
    fails_in_one_line(cli("predict", run, image, "--out", data / "normal" / "preds"), "inside", str(data.resolve()))
    assert snapshot(data) == before
    fails_in_one_line(cli("predict", run, tmp_path / "in", "--out", tmp_path / "in" / "preds"), "inside")
    write_png(tmp_path / "photos" / "holiday.png", 7)
    fails_in_one_line(
        cli("predict", run, image, "--out", tmp_path / "photos"),
        "holiday.png",
        "already holds files that are not a predict output",
    )
    assert cli("predict", run, image, "--out", tmp_path / "preds").exit_code == 0
    assert cli("predict", run, image, "--out", tmp_path / "preds").exit_code == 0  # its own earlier output


def test_predictions_csv_escapes_formula_file_names(folder_run, tmp_path):
    run, _ = folder_run
    names = ["=HYPERLINK(1).png", "+a.png", "-b.png", "@c.png", "plain.png"]
    paths = [write_png(tmp_path / "in" / name, 80 + i, size=32) for i, name in enumerate(names)]
    assert cli("predict", run, *paths, "--out", tmp_path / "out", "--no-panels").exit_code == 0
    rows = list(csv.DictReader((tmp_path / "out" / "predictions.csv").open()))
    by_id = {row["id"] for row in rows}
    assert by_id == {"'=HYPERLINK(1).png", "'+a.png", "'-b.png", "'@c.png", "plain.png"}
    assert all(not row["path"].startswith(("=", "+", "-", "@")) for row in rows)


# 4. A run stopped before its first checkpoint ---------------------------------------------------------------


def test_a_failed_start_removes_the_folder_it_created(tmp_path):
    data = make_folder_dataset(tmp_path / "data", n=8)
    (data / "normal" / "normal-003.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    fails_in_one_line(cli(*train_args(tmp_path / "run", data=data)), "normal-003.png", "--skip-bad")
    assert not (tmp_path / "run").exists()
    (data / "normal" / "normal-003.png").unlink()
    assert cli(*train_args(tmp_path / "run", data=data)).exit_code == 0  # simply rerun


@pytest.mark.slow
def test_an_interrupted_start_resumes_from_zero_and_the_demo_continues(tmp_path, monkeypatch):
    from medsagan import trainer as train_module
    from medsagan.demo import run_demo

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    overrides = merge(TINY_SECTIONS, {"train": {"validate_every": 2, "checkpoint_every": 2}})
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "critic_step", interrupt)
        with pytest.raises(KeyboardInterrupt):
            run_demo(tmp_path / "demo", iterations=4, device="cpu", progress=False, overrides=overrides)
    run = tmp_path / "demo" / "run"
    assert (run / "config.yaml").is_file() and not (run / "checkpoints").exists()
    text = run_demo(tmp_path / "demo", iterations=4, device="cpu", progress=False, overrides=overrides)
    assert "test AUC" in text and (run / "checkpoints" / "state-00000004.pt").is_file()


def test_cli_resume_of_a_run_killed_before_its_first_checkpoint(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    args = train_args(out, data="synthetic")
    tiny_config(train={"iterations": 4}).save(out / "config.yaml")
    fails_in_one_line(cli(*args), "already holds a run", "--resume")
    result = cli("train", "--resume", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert (out / "calibration.json").is_file()


# 5. Resume falls back, tolerates a torn log line, and refuses what it cannot honour --------------------------


@pytest.mark.slow
def test_resume_falls_back_past_an_unreadable_checkpoint_and_a_torn_log_line(tmp_path, caplog):
    out = tmp_path / "run"
    assert cli(*train_args(out, "train.log_every=2", iterations=6)).exit_code == 0
    newest = out / "checkpoints" / "state-00000006.pt"
    newest.write_bytes(newest.read_bytes()[:500])
    with open(out / "log.jsonl", "a") as log:
        log.write('{"iteration": 7, "D/lo')
    result = cli("train", "--resume", out, "--iterations", 8, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "state-00000006.pt" in caplog.text and "falling back" in caplog.text
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["iteration"] for r in records if "D/loss" in r]
    assert losses == [2, 4, 6, 8]  # the torn line dropped, iterations 5-6 retrained from 4 and logged once
    assert (out / "checkpoints" / "state-00000008.pt").is_file()


def test_resume_with_out_or_fewer_iterations_is_refused_and_config_kept(tmp_path):
    out = tmp_path / "run"
    assert cli(*train_args(out, iterations=4)).exit_code == 0
    before = snapshot(tmp_path)
    fails_in_one_line(cli("train", "--resume", out, "--out", tmp_path / "other"), "--out", "--resume")
    fails_in_one_line(cli("train", "--resume", out, "--iterations", 2), "already done 4 iterations", "--iterations 4")
    assert snapshot(tmp_path) == before


# 6. Every configuration value is validated before anything is loaded or made --------------------------------


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.iterations=0", "train.iterations"),
        ("train.validate_every=0", "train.validate_every"),
        ("train.checkpoint_every=-1", "train.checkpoint_every"),
        ("train.log_every=0", "train.log_every"),
        ("train.n_critic=0", "train.n_critic"),
        ("train.lr_g=0", "train.lr_g"),
        ("train.lr_d=-1e-4", "train.lr_d"),
        ("train.threshold_specificity=1.5", "train.threshold_specificity"),
        ("model.mask_keep=0", "model.mask_keep"),
        ("model.mask_keep=1.2", "model.mask_keep"),
        ("data.val_fraction=1", "data.val_fraction"),
        ("model.channels=2", "model.channels"),
        ("model.image_size=0", "model.image_size"),
        ("model.conv_dim=0", "model.conv_dim"),
        ("model.d_conv_dim=-4", "model.d_conv_dim"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.device=gpu", "train.device"),
        ("data.anomaly_ratio=1.5", "data.anomaly_ratio"),
        ("loss.fpi_half_width=[0.3, 0.1]", "loss.fpi_half_width"),
        ("train.lr_g=[1e-4", "train.lr_g=[1e-4"),
    ],
)
def test_bad_config_values_fail_before_any_folder_is_made(tmp_path, override, key):
    fails_in_one_line(cli(*train_args(tmp_path / "run", iterations=None), override), key)
    assert list(tmp_path.iterdir()) == []


def test_a_config_file_that_is_not_yaml_is_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("train: [iterations: 5\n")
    fails_in_one_line(cli("train", "--config", tmp_path / "bad.yaml", "--out", tmp_path / "run"), "bad.yaml", "YAML")
    assert not (tmp_path / "run").exists()


# 9. Decompression bombs -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("L", (14000, 14000)).save(path, compress_level=9)  # ~190 KB that decode to 196 M pixels
    assert path.stat().st_size < 400_000 and MAX_PIXELS < 14000 * 14000
    return path


def test_a_decompression_bomb_is_an_unreadable_image_everywhere(tmp_path, bomb, folder_run):
    data = make_folder_dataset(tmp_path / "data", n=8)
    (data / "normal" / "bomb.png").write_bytes(bomb.read_bytes())
    fails_in_one_line(cli("data", "check", data), "bomb.png", "decompression bomb")
    fails_in_one_line(cli(*train_args(tmp_path / "run", data=data)), "bomb.png", "decompression bomb")
    skipped = cli(*train_args(tmp_path / "run", "--skip-bad", data=data))
    assert skipped.exit_code == 0, skipped.output
    assert any("bomb.png" in s for s in json.loads((tmp_path / "run" / "data.json").read_text())["skipped_images"])
    fails_in_one_line(cli("predict", folder_run[0], bomb, "--out", tmp_path / "preds"), "bomb.png")
    big = tmp_path / "big.png"
    Image.new("L", (9000, 9000)).save(big)  # under PIL's own limit, over medsagan's documented one
    fails_in_one_line(cli("predict", folder_run[0], big, "--out", tmp_path / "preds"), "big.png", f"{MAX_PIXELS:,}")


# 11. Crafted checkpoints ----------------------------------------------------------------------------------


class Payload:
    def __reduce__(self):
        return (print, ("this ran while loading a checkpoint",))


def test_a_crafted_pickle_is_not_a_medsagan_checkpoint(folder_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(folder_run[0], run)
    with open(run / "best.pt", "wb") as handle:
        torch.save({"generator": Payload()}, handle)
    line = fails_in_one_line(cli("evaluate", run), "best.pt", "not a medsagan checkpoint")
    assert "weights_only" not in line and "this ran" not in line
    (run / "best.pt").write_bytes((folder_run[0] / "best.pt").read_bytes()[:1000])
    fails_in_one_line(cli("evaluate", run), "best.pt", "not a readable medsagan checkpoint", "truncated")
    (run / "best.pt").write_bytes(b"hello, not a checkpoint")
    fails_in_one_line(cli("evaluate", run), "best.pt", "medsagan checkpoint")


# 12. A catch-all that keeps the traceback for a bug report --------------------------------------------------


def test_an_unexpected_exception_is_one_line_with_the_traceback_saved(folder_run, monkeypatch):
    from medsagan.evaluate import results as report

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug inside medsagan")

    monkeypatch.setattr(report, "evaluate_run", broken)
    line = fails_in_one_line(
        cli("evaluate", folder_run[0]), "medsagan evaluate", "ZeroDivisionError: a bug inside medsagan", code=1
    )
    saved = line.split("full traceback in ")[1].split(";")[0]
    with open(saved) as handle:
        text = handle.read()
    assert "Traceback (most recent call last)" in text and "a bug inside medsagan" in text
    os.unlink(saved)
