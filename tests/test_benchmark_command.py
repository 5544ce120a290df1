"""`medsagan benchmark`: a grid of rows x seeds trains, resumes after a kill, and tabulates the runs' metrics."""

import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from helpers import TINY
from medsagan.cli import main
from medsagan.devices import machine_name
from medsagan.errors import ConfigError
from medsagan.files import load_tensors
from medsagan.grids import read_grid
from medsagan.runs import RunDir

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "benchmarks"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def write_grid(path: Path, rows: list, **top) -> Path:
    tiny = {**TINY, "data": {"synthetic_count": 24}}  # data.path comes from --data
    path.write_text(yaml.safe_dump({"preset": "fast", "overrides": tiny, **top, "rows": rows}))
    return path


def medsagan(*args, timeout=600):
    command = [sys.executable, "-m", "medsagan", *map(str, args)]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=timeout)


TWO_ROWS = [{"name": "plain", "overrides": {"model": {"acm": False}}}, {"name": "sagan"}]


@pytest.mark.slow
def test_a_two_row_two_seed_grid_trains_and_its_table_equals_the_runs_metrics(tmp_path):
    grid = write_grid(tmp_path / "grid.yaml", TWO_ROWS, seeds=[0, 1])
    out = tmp_path / "bench"
    result = medsagan("benchmark", "--data", "synthetic", "--grid", grid, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "4 runs finished" in result.stdout
    summary = json.loads((out / "results.json").read_text())
    assert [r["row"] for r in summary["rows"]] == ["plain", "sagan"]
    for row in summary["rows"]:
        aucs = [
            json.loads((out / row["row"] / f"seed{s}" / "evaluation/test/metrics.json").read_text())["auc"]
            for s in (0, 1)
        ]
        assert row["auc_per_seed"] == aucs
        assert row["auc"] == pytest.approx(statistics.fmean(aucs))
        assert row["auc_sd"] == pytest.approx(statistics.stdev(aucs))
        assert row["training_tflop"] > 0
    with open(out / "results.csv", newline="") as handle:
        lines = list(csv.DictReader(handle))
    assert [(r["row"], r["seed"]) for r in lines] == [("plain", "0"), ("plain", "1"), ("sagan", "0"), ("sagan", "1")]
    table = (out / "results.md").read_text()
    assert "| plain |" in table and "| sagan |" in table and "model.acm=False" in table
    assert (out / "results.png").stat().st_size > 0
    # The rows differ where the grid says: the saved configs are the preset with the row's overrides.
    plain = yaml.safe_load((out / "plain" / "seed1" / "config.yaml").read_text())
    assert plain["model"]["acm"] is False and plain["train"]["seed"] == 1 and plain["preset"] == "fast"

    again = medsagan("benchmark", "--data", "synthetic", "--grid", grid, "--out", out)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("finished earlier") == 4  # nothing trains or reads the test split twice
    assert json.loads((out / "results.json").read_text())["rows"] == summary["rows"]

    # A third seed asked for, tabulated only: the table of the finished runs, nothing trained.
    table = medsagan("benchmark", "--data", "synthetic", "--grid", grid, "--out", out, "--seeds", "0,1,2", "--tabulate")
    assert table.returncode == 0 and "4 of 6 runs finished" in table.stdout and "training" not in table.stdout
    assert json.loads((out / "results.json").read_text())["rows"] == summary["rows"]
    assert (
        not (out / "plain" / "seed2").exists() and machine_name(torch.device("cpu")) in (out / "results.md").read_text()
    )


@pytest.mark.slow
def test_a_killed_benchmark_resumes_the_interrupted_run_and_skips_the_finished_one(tmp_path):
    rows = [{"name": "first", "overrides": {"train": {"iterations": 4}}}, {"name": "second"}]
    grid = write_grid(tmp_path / "grid.yaml", rows, seeds=[0])
    grid_text = yaml.safe_load(grid.read_text())
    grid_text["overrides"]["train"].update(iterations=60, checkpoint_every=2, validate_every=30)
    grid.write_text(yaml.safe_dump(grid_text))
    out = tmp_path / "bench"
    args = [
        sys.executable,
        "-m",
        "medsagan",
        "benchmark",
        "--data",
        "synthetic",
        "--grid",
        str(grid),
        "--out",
        str(out),
    ]
    process = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list((out / "second" / "seed0" / "checkpoints").glob("state-*.pt")) and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    first = json.loads((out / "first" / "seed0.json").read_text())
    assert "auc" in first
    assert not (out / "second" / "seed0" / "calibration.json").exists()
    metrics = out / "first" / "seed0" / "evaluation" / "test" / "metrics.json"
    evaluated = metrics.stat().st_mtime_ns
    interrupted = RunDir(out / "second" / "seed0")
    before_kill = load_tensors(interrupted.states()[-1])["train_seconds"]

    resumed = medsagan("benchmark", "--data", "synthetic", "--grid", grid, "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    assert "first seed 0: finished earlier" in resumed.stdout
    assert "second seed 0: resuming from iteration" in resumed.stdout
    assert metrics.stat().st_mtime_ns == evaluated  # the finished run's test split was not read again
    assert json.loads((out / "first" / "seed0.json").read_text()) == first
    second = json.loads((out / "second" / "seed0.json").read_text())
    assert second["resumed"] == 1 and second["iterations"] == 60
    # Its minutes are the loop's time over both parts, as the run logged it, not the resumed part's alone.
    logged = interrupted.train_seconds()
    assert second["minutes"] * 60 == pytest.approx(logged) and logged > before_kill > 0
    assert (out / "second" / "seed0" / "checkpoints" / "state-00000060.pt").is_file()
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 2


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"rows": [{"name": "a"}], "row": []}, "unknown key 'row'"),
        ({"rows": [{"overrides": {}}]}, "row 1 has no name"),
        ({"rows": [{"name": "a"}, {"name": "a"}]}, "row 'a': the name is used twice"),
        (
            {"rows": [{"name": "a", "overrides": {"train": {"iteration": 5}}}]},
            "row 'a': unknown config key train.iteration",
        ),
        ({"rows": [{"name": "a", "preset": "quick"}]}, "row 'a': unknown preset 'quick'"),
        ({"rows": [{"name": "../a"}]}, "row '../a': a name is letters"),
        (
            {"rows": [{"name": "a", "overrides": {"train": {"seed": 3}}}]},
            "train.seed and data.path come from the command",
        ),
        ({"rows": []}, "give a list of rows"),
        ({"rows": [{"name": "a"}], "seeds": [0, 0]}, "seed 0 is given twice"),
    ],
)
def test_a_bad_grid_is_one_line_before_anything_is_written(tmp_path, capsys, grid, message):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark", "--data", "synthetic", "--grid", str(path), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(path) in err[0]
    assert not (tmp_path / "out").exists()


def test_a_missing_grid_file_is_named_as_the_grid(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["benchmark", "--data", "synthetic", "--grid", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o")])
    assert f"--grid {tmp_path / 'none.yaml'} does not exist" in capsys.readouterr().err


def test_a_changed_row_or_other_data_is_refused_against_the_runs_already_there(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "benchmark.json").write_text(
        json.dumps({"data": "synthetic", "rows": {"a": {"preset": "fast", "overrides": {}}}})
    )
    changed = write_grid(tmp_path / "grid.yaml", [{"name": "a", "overrides": {"model": {"acm": False}}}])
    with pytest.raises(SystemExit):
        main(["benchmark", "--data", "synthetic", "--grid", str(changed), "--out", str(out), "--dry-run"])
    assert "row 'a' differs from the row of that name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["benchmark", "--data", str(tmp_path), "--grid", str(changed), "--out", str(out), "--dry-run"])
    assert "its runs trained on synthetic" in capsys.readouterr().err
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):
        main(["benchmark", "--data", "synthetic", "--grid", str(changed), "--out", str(tmp_path / "foreign")])
    assert "already holds files that are not a benchmark" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["table3.yaml", "table4.yaml"])
def test_the_shipped_paper_grids_build_every_run(tmp_path, capsys, name):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "benchmark",
                "--data",
                "synthetic",
                "--grid",
                str(CONFIGS / name),
                "--out",
                str(tmp_path / "o"),
                "--dry-run",
            ]
        )
    assert exit_info.value.code == 0
    grid = read_grid(CONFIGS / name)
    assert f"{len(grid.rows) * 3} runs ({len(grid.rows)} rows x 3 seeds)" in capsys.readouterr().out
    assert not (tmp_path / "o").exists()


def test_rows_keeps_the_named_rows_in_the_grids_order_and_refuses_a_name_it_lacks(tmp_path, capsys):
    grid = write_grid(tmp_path / "grid.yaml", [{"name": "a"}, *TWO_ROWS], seeds=[0, 1])
    assert [row.name for row in read_grid(grid, only=("sagan", "a")).rows] == ["a", "sagan"]
    out = tmp_path / "o"
    args = ["benchmark", "--data", "synthetic", "--grid", str(grid), "--out", str(out), "--dry-run"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--rows", "plain"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "2 runs (1 rows x 2 seeds)" in printed and "name: sagan" not in printed
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--rows", "plain,ratio-9"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--rows: 'ratio-9' is not a row of" in error and "its rows are a, plain, sagan" in error


def test_a_rows_reference_figure_stands_beside_its_results_and_changes_no_run(tmp_path):
    from medsagan.benchmark import results_markdown, summary_row
    from medsagan.viz.plots import benchmark_figure

    rows = [{"name": "plain", "reference": "88.54 / 84.37", "reference_auc": 0.8854}, {"name": "sagan"}]
    grid = read_grid(write_grid(tmp_path / "grid.yaml", rows, reference="paper (AUC / AP %)"))
    plain, sagan = grid.rows
    assert plain.to_dict() == read_grid(write_grid(tmp_path / "bare.yaml", [{"name": "plain"}])).rows[0].to_dict()
    record = {"ap": 0.95, "minutes": 2.0, "training_tflop": 1.0, "chosen_iteration": 4}
    runs = [{**record, "seed": seed, "auc": 0.9 + seed / 100} for seed in (0, 1)]
    table = results_markdown(grid, "synthetic", [summary_row(plain, runs), summary_row(sagan, runs[:1])], "cpu")
    header, _, first, second = table.splitlines()[4:8]
    assert header.endswith("| minutes per run | paper (AUC / AP %) |")
    assert first.startswith("| plain |") and first.endswith("| 88.54 / 84.37 |")
    assert second.startswith("| sagan |") and second.endswith("|  |")
    assert summary_row(plain, runs)["reference_auc"] == 0.8854 and "reference_auc" not in summary_row(sagan, runs)
    figure = benchmark_figure([summary_row(plain, runs), summary_row(sagan, runs)], tmp_path / "r.png")
    assert figure.stat().st_size > 0
    bare = read_grid(write_grid(tmp_path / "bare.yaml", [{"name": "sagan"}]))
    unreferenced = results_markdown(bare, "synthetic", [summary_row(sagan, runs)], "cpu").splitlines()
    assert unreferenced[4].endswith("| minutes per run |") and unreferenced[6].endswith("| 2.0 |")


@pytest.mark.parametrize("value", [88.54, -0.1, "0.9", True])
def test_a_reference_auc_is_a_fraction(tmp_path, value):
    grid = write_grid(tmp_path / "grid.yaml", [{"name": "plain", "reference_auc": value}])
    with pytest.raises(ConfigError, match=r"row 'plain': reference_auc is .*fraction in \[0, 1\]"):
        read_grid(grid)


def test_seeds_are_distinct_whole_numbers():
    from medsagan.grids import parse_seeds

    assert parse_seeds("0,1 2", "--seeds") == (0, 1, 2)
    for bad in ("-1", "1.5", "a", ""):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad, "--seeds")


@pytest.mark.parametrize("flag", [[], ["--progress"]])
def test_a_progress_bar_per_run_only_on_a_terminal_or_when_asked(tmp_path, capsys, flag):
    grid = write_grid(tmp_path / "grid.yaml", [{"name": "a"}], seeds=[0])
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark", "--data", "synthetic", "--grid", str(grid), "--out", str(tmp_path / "o"), *flag])
    assert exit_info.value.code == 0
    captured = capsys.readouterr()
    assert "1 run finished" in captured.out
    # tqdm's bar ends each redraw with its rate; pytest's captured stderr is not a terminal.
    assert ("it/s]" in captured.err or "s/it]" in captured.err) == bool(flag)
    machine = machine_name(torch.device("cpu"))  # the runs trained on this CPU, named as every time should be
    assert machine in (tmp_path / "o" / "results.md").read_text()
    with open(tmp_path / "o" / "results.csv", newline="") as handle:
        assert [r["machine"] for r in csv.DictReader(handle)] == [machine]


def test_a_run_another_process_holds_is_left_to_it_and_taken_up_by_a_later_rerun(tmp_path, capsys):
    from medsagan.files import RunLock

    grid, out = write_grid(tmp_path / "grid.yaml", [{"name": "a"}]), tmp_path / "o"
    command = ["benchmark", "--data", "synthetic", "--grid", str(grid), "--out", str(out)]
    with pytest.raises(SystemExit):
        main([*command, "--seeds", "1"])
    capsys.readouterr()
    with RunLock(out / "a", "seed0.lock"):  # as a second `medsagan benchmark` on the same --out holds it
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--seeds", "0,1"])
        assert exit_info.value.code == 0
        said = capsys.readouterr().out
        assert f"a seed 0: process {os.getpid()} has it; left to that process" in said
        assert "a seed 1: finished earlier" in said and "1 of 2 runs left to other processes" in said
        assert not (out / "a" / "seed0").exists()
        assert [r["seed"] for r in json.loads((out / "results.json").read_text())["runs"]] == [1]
    with pytest.raises(SystemExit):
        main([*command, "--seeds", "0,1"])
    said = capsys.readouterr().out
    assert "a seed 0: training" in said and "2 runs finished" in said


@pytest.mark.slow
def test_two_benchmarks_on_one_out_share_the_runs_and_train_each_once(tmp_path):
    grid = write_grid(tmp_path / "grid.yaml", [{"name": "a"}, {"name": "b", "overrides": {"model": {"acm": False}}}])
    command = [sys.executable, "-m", "medsagan", "benchmark", "--data", "synthetic", "--grid", str(grid)]
    command += ["--out", str(tmp_path / "o"), "--seeds", "0,1"]
    first = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outputs = [process.communicate(timeout=600) for process in (first, second)]
    assert [process.returncode for process in (first, second)] == [0, 0], outputs
    said = outputs[0][0] + outputs[1][0]
    for row, seed in [("a", 0), ("a", 1), ("b", 0), ("b", 1)]:
        assert said.count(f"{row} seed {seed}: training") == 1, said
        assert json.loads((tmp_path / "o" / row / f"seed{seed}.json").read_text())["resumed"] == 0
    final = medsagan("benchmark", "--data", "synthetic", "--grid", grid, "--out", tmp_path / "o", "--seeds", "0,1")
    assert final.stdout.count("finished earlier") == 4 and "4 runs finished" in final.stdout


@pytest.mark.slow
def test_jobs_train_the_runs_in_several_processes_each_once_and_tabulate_them_all(tmp_path):
    grid = write_grid(tmp_path / "grid.yaml", [{"name": "a"}, {"name": "b", "overrides": {"model": {"acm": False}}}])
    out = tmp_path / "o"
    result = medsagan("benchmark", "--data", "synthetic", "--grid", grid, "--out", out, "--seeds", "0,1", "--jobs", "2")
    assert result.returncode == 0, result.stderr
    said = result.stdout + (out / "job1.log").read_text()
    for row, seed in [("a", 0), ("a", 1), ("b", 0), ("b", 1)]:
        assert said.count(f"{row} seed {seed}: training") == 1, said
    assert result.stdout.strip().splitlines()[-1].startswith("4 runs finished")
    assert "run this again" not in result.stdout  # the command waited for the other job itself
    records = [json.loads(path.read_text()) for path in out.glob("*/seed*.json")]
    assert [r["threads"] for r in records] == [max(1, (os.cpu_count() or 1) // 2)] * 4


def test_jobs_that_fail_are_named_by_their_logs(tmp_path):
    from medsagan.jobs import Workers, job_devices

    assert job_devices("cpu", 3) == ["cpu"] * 3
    threads = torch.get_num_threads()
    with Workers(["--no-such-option"], 2, tmp_path, ["cpu", "cpu"]) as workers:
        assert workers.failed() == [tmp_path / "job1.log"]
    assert "no-such-option" in (tmp_path / "job1.log").read_text()
    assert torch.get_num_threads() == threads
