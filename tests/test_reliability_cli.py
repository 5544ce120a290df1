"""Each bad input gets one line on stderr naming what is wrong, and a documented exit code (2)."""

import socket

import pytest
from click.testing import CliRunner

from medsagan.cli import main


def one_line_error(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return result.exit_code, lines


@pytest.mark.parametrize("vmax", ["-1", "nan", "0", "inf"])
def test_predict_refuses_a_colour_scale_that_is_not_a_positive_number(tmp_path, vmax):
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    code, lines = one_line_error("predict", tmp_path, image, "--out", tmp_path / "out", "--vmax", vmax)
    assert code == 2 and len(lines) == 1 and "--vmax" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("port", ["0", "70000"])
def test_serve_refuses_a_port_out_of_range(tmp_path, port):
    code, lines = one_line_error("serve", tmp_path, "--port", port)
    assert code == 2 and len(lines) == 1 and "--port" in lines[0]


def test_a_port_in_use_is_one_line_before_anything_is_served():
    from medsagan.errors import DataError
    from medsagan.serve import check_port_free

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DataError, match=rf"cannot serve on 127\.0\.0\.1:{port}.*choose another --port"):
            check_port_free("127.0.0.1", port)


def test_import_official_refuses_a_data_path_that_does_not_exist(tmp_path):
    checkpoint = tmp_path / "G.ckpt"
    checkpoint.write_bytes(b"x")
    code, lines = one_line_error("import-official", checkpoint, "--out", tmp_path / "run", "--data", tmp_path / "nope")
    assert code == 2 and len(lines) == 1 and "nope does not exist" in lines[0]
    assert not (tmp_path / "run").exists()


def test_data_check_with_the_synthetic_source_refuses_a_path_it_would_ignore(tmp_path):
    code, lines = one_line_error("data", "check", "--source", "synthetic", tmp_path)
    assert code == 2 and len(lines) == 1 and "would be ignored" in lines[0]


def test_every_writing_command_checks_its_output_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    run_like = tmp_path / "run"
    run_like.mkdir()
    (run_like / "config.yaml").write_text("preset: fast\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    cases = [
        (["train", "--data", "synthetic", "--out", blocker / "sub"], "is a file"),
        (["demo", "--out", blocker / "sub"], "is a file"),
        (["demo", "--out", run_like], "holds a training run, not a demo"),
        (["report", run_like, "--out", blocker / "r.html"], "is a file"),
        (["export", run_like, "--out", blocker / "m.onnx"], "is a file"),
        (["predict", run_like, blocker, "--out", run_like], "holds a training run, not a predict output"),
    ]
    for args, message in cases:
        code, lines = one_line_error(*args)
        assert code == 2 and len(lines) == 1 and message in lines[0], (args, lines)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing made, no lock left


def test_a_non_empty_folder_that_is_not_a_run_is_refused_as_such_and_left_as_it_was(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    code, lines = one_line_error("train", "--data", "synthetic", "--out", folder)
    assert code == 2 and len(lines) == 1
    assert "not a training run" in lines[0] and "--resume" not in lines[0]
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_predict_into_its_earlier_output_leaves_no_stale_panels(tmp_path):
    from helpers import tiny_config, write_png
    from medsagan.predict import predict
    from medsagan.train import fit

    run = fit(tiny_config(train={"iterations": 2}), tmp_path / "run", progress=False)
    first = [write_png(tmp_path / "in" / f"a{i}.png", 40 * i, size=32) for i in range(3)]
    predict(run, first, tmp_path / "out", device="cpu")
    second = write_png(tmp_path / "in2" / "b.png", 90, size=32)
    predict(run, [second], tmp_path / "out", device="cpu")
    assert [p.name for p in (tmp_path / "out" / "panels").iterdir()] == ["b.png"]


def test_data_check_describes_the_validation_that_training_uses(tmp_path):
    from helpers import tiny_config
    from medsagan.data.dataset import build_training_data
    from medsagan.data.sources import open_source
    from medsagan.train import data_summary

    result = CliRunner().invoke(main, ["data", "check", "synthetic", "data.synthetic_count=24", "--json"])
    planned = __import__("json").loads(result.output)["validation"]
    text = CliRunner().invoke(main, ["data", "check", "synthetic", "data.synthetic_count=24"]).output
    cfg = tiny_config()
    trained = data_summary(build_training_data(open_source(cfg), cfg, tmp_path / "cache"), "", "validation")[
        "validation"
    ]
    assert planned["kind"] == trained["kind"] == "aucp_heldout"
    assert (planned["held_out_normals"], planned["held_out_unlabeled"]) == (trained["normal"], trained["positive"])
    assert (
        f"{trained['positive']} held-out unlabelled images" in text
        and "none" not in text.split("validation:")[1].split("\n")[0]
    )


@pytest.mark.slow
def test_a_successful_export_prints_one_line_and_no_library_chatter(tmp_path):
    pytest.importorskip("onnxscript")
    from helpers import tiny_config
    from medsagan.train import fit

    run = fit(tiny_config(train={"iterations": 2}), tmp_path / "run", progress=False)
    result = CliRunner().invoke(main, ["export", str(run), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and result.stdout.strip().splitlines() == [f"written: {tmp_path / 'm.onnx'}"]


def test_ctrl_c_gives_advice_that_fits_the_command(tmp_path, monkeypatch):
    from medsagan.evaluate import results as report

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "evaluate_run", interrupt)
    code, lines = one_line_error("evaluate", tmp_path)
    assert code == 130 and len(lines) == 1
    assert "medsagan evaluate" in lines[0] and "--resume" not in lines[0]


def test_evaluate_finds_a_moved_dataset_with_data(tmp_path):
    import shutil

    from helpers import make_folder_dataset, tiny_config
    from medsagan.train import fit

    make_folder_dataset(tmp_path / "data", n=6)
    run = fit(
        tiny_config(data={"path": str(tmp_path / "data")}, train={"iterations": 2}), tmp_path / "run", progress=False
    )
    shutil.move(tmp_path / "data", tmp_path / "moved")
    code, lines = one_line_error("evaluate", run)
    assert code == 2 and len(lines) == 1 and "medsagan evaluate RUN --data PATH" in lines[0]
    result = CliRunner().invoke(main, ["evaluate", str(run), "--data", str(tmp_path / "moved"), "--json"])
    assert result.exit_code == 0, result.output


def test_an_unknown_key_in_a_medad_split_is_refused_by_name(tmp_path):
    import json

    from medsagan.data.sources import read_split
    from medsagan.errors import DataError

    index = {"train": {"0": ["a.png"], "unlabeled": {"0": [], "1": []}}, "test": {"0": ["b.png"], "1": ["c.png"]}}
    (tmp_path / "data.json").write_text(json.dumps({**index, "val": {"0": ["d.png"]}}))
    with pytest.raises(DataError, match=r"unknown key val"):
        read_split(tmp_path / "data.json")
    (tmp_path / "data.json").write_text(json.dumps(index))
    assert read_split(tmp_path / "data.json")["train/0"] == ["a.png"]


@pytest.mark.parametrize("name", ["a\x00.png", "b\x1b[31m.png", "c\n.png"])
def test_a_split_name_with_a_control_character_is_one_clear_error(tmp_path, name):
    from medsagan.errors import DataError
    from medsagan.files import contained

    with pytest.raises(DataError, match="control character"):
        contained(tmp_path, name, "data.json (train.0)")


def test_errors_come_from_the_right_layer():
    import torch

    from medsagan.errors import ConfigError, RunError
    from medsagan.pseudo_anomalies import other_images
    from medsagan.records import Selection

    with pytest.raises(RunError, match="selection record"):
        Selection.from_dict({"metric": "val/aucp"})
    with pytest.raises(ConfigError, match=r"train\.batch_size"):
        other_images(torch.zeros(1, 1, 8, 8), torch.Generator())


def test_a_full_disk_while_saving_is_one_clear_error_and_leaves_the_old_file(tmp_path, monkeypatch):
    import errno
    import os

    from medsagan import files
    from medsagan.errors import RunError

    target = files.atomic_write_text(tmp_path / "state.pt", "old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RunError, match=r"no space left on the disk; the file it was replacing is intact"):
        files.atomic_write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_linked_sub_folders_are_read_and_broken_or_looping_links_are_named(tmp_path):
    from helpers import make_folder_dataset, tiny_config
    from medsagan.data.sources import open_source
    from medsagan.errors import DataError

    root = make_folder_dataset(tmp_path / "data", n=6)
    extra = tmp_path / "elsewhere"
    extra.mkdir()
    for i in range(2):
        (root / "normal" / f"normal-00{i}.png").rename(extra / f"linked-{i}.png")
    (root / "normal" / "more").symlink_to(extra, target_is_directory=True)
    listed = open_source(tiny_config(data={"path": str(root)})).pools["train/0"]
    assert {"normal/more/linked-0.png", "normal/more/linked-1.png"} <= set(listed)

    (root / "normal" / "gone.png").symlink_to(tmp_path / "missing.png")
    with pytest.raises(DataError, match=r"gone\.png: a broken link"):
        open_source(tiny_config(data={"path": str(root)}))
    (root / "normal" / "gone.png").unlink()
    (extra / "loop").symlink_to(root / "normal", target_is_directory=True)
    with pytest.raises(DataError, match="a link loop"):
        open_source(tiny_config(data={"path": str(root)}))


@pytest.mark.slow
def test_demo_takes_the_advice_it_gives_for_an_impossible_ratio_and_leaves_no_empty_folder(tmp_path):
    from helpers import TINY, make_medad_dataset

    root = make_medad_dataset(tmp_path / "medad")
    code, lines = one_line_error("demo", "--data", root, "--out", tmp_path / "demo", "--device", "cpu")
    assert code == 2 and len(lines) == 1 and "data.anomaly_ratio 0.6 needs 4 abnormal" in lines[0]
    assert not (tmp_path / "demo").exists()

    tiny = [f"{s}.{k}={v}" for s, keys in TINY.items() if s != "data" for k, v in keys.items()]
    args = ["demo", "--data", root, "--out", tmp_path / "demo", "--device", "cpu", "--iterations", "2", "--no-progress"]
    result = CliRunner().invoke(main, [*map(str, args), *tiny, "data.anomaly_ratio=0.1", "train.validate_every=2"])
    assert result.exit_code == 0, result.output
    assert "test AUC" in result.output


def test_a_folder_given_as_medmnist_is_named_as_a_folder_not_as_a_corrupt_download(tmp_path):
    from helpers import make_folder_dataset

    root = make_folder_dataset(tmp_path / "folder", n=4)
    code, lines = one_line_error("data", "check", root, "--source", "medmnist")
    assert code == 2 and len(lines) == 1
    assert "is a folder, not a MedMNIST .npz file" in lines[0] and "download" not in lines[0]


def test_control_characters_in_a_file_name_are_shown_escaped_never_sent_to_the_terminal(tmp_path, capsys):
    from medsagan.cli import main

    hostile = tmp_path / "run\x1b[31mred\x07"
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(hostile)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "\x1b" not in err and "\x07" not in err
    assert "run\\x1b[31mred\\x07" in err
