"""The benchmarks' measuring code (not their timings): FLOP counts, the official-schedule reference, output."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medsagan.compute import FlopCounter, flops_per_iteration, make_trainer
from medsagan.config import load_config
from medsagan.devices import resolve_precision
from medsagan.models import build_generator
from medsagan.models.summary import describe

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import speed  # noqa: E402


def test_counted_multiply_adds_equal_the_closed_form_of_each_layer_kind():
    from torch import nn

    from medsagan.models.summary import multiply_adds

    x = torch.zeros(2, 3, 16, 16)
    conv = nn.Conv2d(3, 8, 4, stride=2, padding=1)  # 8 x 8 outputs, each 3 * 4 * 4 multiply-adds per channel
    assert multiply_adds(conv, x)[0] == 2 * 8 * 8 * 8 * 3 * 4 * 4
    up = nn.ConvTranspose2d(3, 8, 4, stride=2, padding=1)  # every input pixel meets 8 * 4 * 4 weights
    assert multiply_adds(up, x)[0] == 2 * 16 * 16 * 3 * 8 * 4 * 4
    linear = nn.Linear(16, 5)
    assert multiply_adds(linear, x)[0] == 2 * 3 * 16 * 16 * 5
    cfg = load_config(preset="fast")
    with FlopCounter() as counter, torch.no_grad():
        build_generator(cfg.model).eval()(torch.zeros(1, 1, 64, 64))
    assert describe(cfg.model)["generator_gmacs_per_image"] == round(counter.total / 2e9, 4)


@pytest.mark.slow
def test_official_schedule_reference_takes_the_training_loops_steps():
    # No random mask and one generator pass per batch, so both schedules compute the same function.
    overrides = {"train": {"batch_size": 4, "precision": "float32"}, "model": {"mask_keep": 1.0}}
    cfg = load_config(preset="fast", overrides={**overrides, "loss": {"critic_real_mask": False}})
    trainers = []
    for _ in range(2):
        torch.manual_seed(0)
        trainers.append(make_trainer(cfg, torch.device("cpu")))
    ours, reference = trainers
    for step in range(1, 5):
        logged, official = ours.iteration(step), speed.official_iteration(reference, step)
        assert set(official) == ({"D/loss", "G/loss"} if step % 2 == 0 else {"D/loss"})
        for key, value in official.items():
            torch.testing.assert_close(logged[key], value, rtol=1e-4, atol=1e-6, msg=f"{key} at step {step}")
    assert flops_per_iteration(reference) > 0


@pytest.mark.slow
def test_speed_benchmark_prints_every_figure(tmp_path):
    command = [sys.executable, str(BENCHMARKS / "speed.py"), "--presets", "fast", "--batch", "4", "--steps", "1"]
    command += ["--windows", "1", "--versus", "train.reuse_restoration=true", "--markdown"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[0])
    # fast's precision is auto: bfloat16 autocast where this CPU computes it natively.
    native = resolve_precision("auto", torch.device("cpu")) == "bfloat16"
    assert result["preset"] == "fast" and result["batch"] == 4
    assert result["precision"] == ("bfloat16 autocast" if native else "float32")
    for key in ("peak_gflops", "gflop_per_iteration", "train_iterations_per_s", "score_images_per_s"):
        assert result[key] > 0, key
    assert 0 < result["percent_of_peak"] < 100
    assert result["speedup_over_official_schedule"] > 0 and result["versus_iterations_per_s"] > 0
    assert lines[1].startswith("| fast |") and lines[1].count("|") == 10


def test_aggregations_rank_maps_by_their_brightest_pixels_and_blur_keeps_the_mean():
    import aggregation

    rng = np.random.default_rng(0)
    maps = rng.random((3, 16, 16)).astype(np.float32)
    assert np.allclose(aggregation.aggregate(maps, 0.0, 1.0), maps.reshape(3, -1).mean(1))
    top = aggregation.aggregate(maps, 0.0, 0.05)  # 13 of 256 pixels
    assert np.allclose(top, np.sort(maps.reshape(3, -1), 1)[:, -13:].mean(1))
    # Reflect padding makes the blur a weighted average of the map itself: a flat map stays flat.
    assert np.allclose(aggregation.blur(np.full((1, 16, 16), 0.3, np.float32), 2.0), 0.3, atol=1e-6)
    # A small bright spot: top-k finds it, the mean barely moves, the blur spreads it below its peak.
    spot = np.zeros((1, 16, 16), np.float32)
    spot[0, 8, 8] = 1.0
    assert aggregation.aggregate(spot, 0.0, 0.01)[0] > 0.3 > aggregation.aggregate(spot, 0.0, 1.0)[0]
    assert aggregation.blur(spot, 1.0).max() < 0.2


def test_checkpoint_average_is_the_elementwise_mean_and_a_working_generator():
    import checkpoint_average

    cfg = load_config(preset="fast")
    first, second = build_generator(cfg.model).state_dict(), build_generator(cfg.model).state_dict()
    mean = checkpoint_average.average([first, second])
    assert mean.keys() == first.keys()
    key = next(k for k, v in first.items() if v.is_floating_point() and not torch.equal(v, second[k]))
    assert torch.allclose(mean[key], (first[key] + second[key]) / 2)
    generator = build_generator(cfg.model).eval()
    generator.load_state_dict(mean)
    with torch.no_grad():
        assert torch.isfinite(generator(torch.zeros(1, 1, 64, 64))).all()


def medad_run(tmp_path):
    """A tiny Med-AD folder with unused pool images, and a run on it that keeps every checkpoint."""
    from helpers import blob_image, tiny_config, write_png
    from medsagan.runs import RunDir
    from medsagan.train import fit

    rng = np.random.default_rng(0)
    pools = {"train/0": 16, "train/unlabeled/0": 20, "train/unlabeled/1": 40, "test/0": 4, "test/1": 4}
    names = {pool: [f"{pool.replace('/', '-')}-{i}.png" for i in range(n)] for pool, n in pools.items()}
    for pool, files in names.items():
        for name in files:
            write_png(tmp_path / "data" / "images" / name, blob_image(rng, 32, abnormal=pool.endswith("1")), 32)
    index = {
        "train": {
            "0": names["train/0"],
            "unlabeled": {"0": names["train/unlabeled/0"], "1": names["train/unlabeled/1"]},
        },
        "test": {"0": names["test/0"], "1": names["test/1"]},
    }
    (tmp_path / "data" / "data.json").write_text(json.dumps(index))
    cfg = tiny_config(data={"path": str(tmp_path / "data")}, train={"iterations": 4, "keep_checkpoints": 5})
    return RunDir(fit(cfg, tmp_path / "run", progress=False)), names


def test_devset_takes_only_pool_images_the_run_never_saw_and_scores_every_kept_checkpoint(tmp_path):
    import devset

    run, names = medad_run(tmp_path)

    dev = devset.unused_pool_images(run, ratio=0.5)
    seen = run.load_digests()
    assert not set(dev.digests) & set(seen)
    used = set(seen.values())
    # The protocol took 16 - 9 = 7 unlabelled normals and 9 abnormals from the front of each pool.
    assert dev.ids[:13] == names["train/unlabeled/0"][7:] and not set(dev.ids) & used
    assert (dev.labels == 0).sum() == 13 and (dev.labels == 1).sum() == 13
    assert all(name.startswith("train-unlabeled") for name in dev.ids)

    result = devset.dev_figures(run.path, ratio=0.5)
    assert [p["iteration"] for p in result["points"]] == [2, 4]
    assert all(0 <= p["dev_auc"] <= 1 for p in result["points"]) and result["chosen"]["iteration"] in (3, 4)
    assert json.loads((run.path / "devset.json").read_text())["dev_images"] == {"normal": 13, "abnormal": 13}


def test_selection_signals_score_every_kept_checkpoint_and_each_signal_picks_its_own_maximum(tmp_path):
    import selection_signals

    run, _ = medad_run(tmp_path)
    result = selection_signals.signal_points(run.path)
    points = result["points"]
    assert [p["iteration"] for p in points] == [2, 4]
    for name in ("val/aucp", "val/pseudo", "val/combined"):
        assert all(0 <= p[name] <= 1 for p in points)
        pick = result["picks"][name]
        assert pick["dev_auc"] == max(points, key=lambda p, name=name: p[name])["dev_auc"]
        assert pick["good"] == (pick["dev_auc"] >= result["best_dev_auc"] - selection_signals.WITHIN)
    for p in points:
        assert p["val/combined"] == pytest.approx((p["val/aucp"] + p["val/pseudo"]) / 2)
    assert result["picks"]["last"]["iteration"] == 4
    table = selection_signals.summary({"tiny": result})
    assert table.count("\n") == 3 and "| tiny |" in table and "picks within 0.01" in table
    assert json.loads((run.path / "selection-signals.json").read_text())["picks"] == result["picks"]


def test_trajectory_picks_the_first_best_checkpoint_from_each_start():
    from trajectory import picks

    metric = {100: 0.81, 200: 0.70, 300: 0.75, 400: 0.75, 500: 0.72}
    points = [
        {"iteration": i, "selection_metric": m, "aucp_training_unlabeled": i / 1e3, "test_auc": i / 600, "test_ap": 0.5}
        for i, m in metric.items()
    ]
    chosen = picks(points, run_start=0, select_from=300)
    assert chosen["selection_metric"]["iteration"] == 100  # any checkpoint: the early one wins by its AUCp
    assert chosen["selection_metric_from_300"]["iteration"] == 300  # of two equals the first, as training keeps
    assert chosen["aucp_training_unlabeled"]["iteration"] == 500 and chosen["last"]["iteration"] == 500
    assert picks(points, run_start=200)["selection_metric"]["iteration"] == 300


def test_trajectories_draw_a_panel_per_row_and_name_a_row_without_trajectories(tmp_path):
    import trajectories
    from PIL import Image

    for row, seeds in (("a", (0, 1)), ("b", (2,))):
        for seed in seeds:
            points = [{"iteration": i, "selection_metric": 0.5 + i / 1e4, "test_auc": 0.6} for i in (100, 200)]
            picked = {"selection_metric": {"iteration": 200, "test_auc": 0.6}}
            (tmp_path / row / f"seed{seed}").mkdir(parents=True)
            result = {"validation": "labelled", "points": points, "picks": picked}
            (tmp_path / row / f"seed{seed}" / "trajectory.json").write_text(json.dumps(result))
    assert sorted(trajectories.read_row(tmp_path / "a")) == [0, 1]
    trajectories.main([f"A={tmp_path / 'a'}", f"B={tmp_path / 'b'}", "--out", str(tmp_path / "t.png")])
    assert Image.open(tmp_path / "t.png").size == (round(4.2 * 2 * 110), round(3.6 * 110))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"empty: no seedN/trajectory\.json"):
        trajectories.main([f"C={tmp_path / 'empty'}", "--out", str(tmp_path / "u.png")])
    with pytest.raises(SystemExit, match="expected LABEL=FOLDER"):
        trajectories.main([str(tmp_path / "a"), "--out", str(tmp_path / "u.png")])


def test_early_stop_replays_the_training_loops_patience_on_a_logged_signal(tmp_path):
    import early_stop

    from helpers import tiny_config

    signal = {2: 0.6, 4: 0.7, 6: 0.65, 8: 0.64, 10: 0.9, 12: 0.95}  # the scripted signal of test_train's patience
    assert early_stop.replay(signal, 0, 2, 12, 2) == (8, 4)  # where the training loop ends and what it keeps
    assert early_stop.replay(signal, 0, 2, 12, 0) == (12, 12)
    assert early_stop.replay(signal, 6, 2, 12, 2) == (12, 12)  # best from select_from on: 6, then 10 and 12
    run = tmp_path / "row" / "seed0"
    run.mkdir(parents=True)
    tiny_config(train={"iterations": 12, "validate_every": 2}).save(run / "config.yaml")
    points = [{"iteration": i, "selection_metric": v, "test_auc": i / 100} for i, v in signal.items()]
    (run / "trajectory.json").write_text(json.dumps({"points": points}))
    (run / "devset.json").write_text(json.dumps({"points": [{"iteration": i, "dev_auc": i / 50} for i in signal]}))
    (record,) = early_stop.study([str(tmp_path / "row")], [2])
    assert record["ends_at"] == 8 and record["pick"] == 4 and record["full_pick"] == 12
    assert record["dev_auc"] == 0.08 and record["test_auc"] == 0.04 and record["full_test_auc"] == 0.12
    assert "| row/seed0 | 2 | 8 (67%) | 4 (12) |" in early_stop.markdown([record])


def test_localisation_on_blended_normals_reads_only_test_normals_and_measures_the_blends(tmp_path):
    import localisation as bench

    from helpers import tiny_config
    from medsagan.train import fit

    run = fit(tiny_config(data={"synthetic_count": 48}), tmp_path / "run", progress=False)
    result = bench.blended_normals(str(run), seed=0)
    assert result["images_with_ground_truth"] == 8  # half of the 16 test normals are blended
    assert result["abnormal_without_ground_truth"] == 0
    for key in ("image_auc_blended_vs_normal", "pixel_auroc", "aupro", "pointing_game", "dice", "iou"):
        assert 0 <= result[key] <= 1, key
    assert result["normals_psnr"] > 0 and -1 <= result["normals_ssim"] <= 1 and 0 <= result["map_share_in_body"] <= 1
    assert result == bench.blended_normals(str(run), seed=0)  # seeded: the same blends every time
    assert result["blend_undone"] <= 1 and result["blend_undone_strong_half"] <= 1
    assert result["blend_strength_median"] > 0 and 0 <= result["strong_half_aupro"] <= 1


def test_blend_undone_is_one_for_a_restoration_that_gives_the_normal_back_and_zero_for_a_copy():
    import localisation as bench

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32)
    masks = np.zeros((4, 8, 8), dtype=bool)
    masks[[0, 2], 2:5, 2:5] = True
    mixed = x.copy()
    mixed[[0, 2], :, 2:5, 2:5] += np.array([0.2, 0.6])[:, None, None, None]
    labels = np.array([1, 0, 1, 0])
    maps = np.abs(mixed - x).mean(1)

    class Scored:
        scores = maps.mean((1, 2))

    for restored, undone in ((x, 1.0), (mixed, 0.0)):
        Scored.restored, Scored.maps = restored, maps
        result = bench.blend_strength(x, mixed, Scored, masks, labels, vmax=1.0)
        assert result["blend_undone"] == pytest.approx(undone) == result["blend_undone_strong_half"]
    assert result["blend_strength_median"] == pytest.approx(0.4)  # the median of the two blends' 0.2 and 0.6


def test_localisation_on_development_normals_blends_only_pool_normals_the_run_never_saw(tmp_path):
    import localisation as bench

    run, _ = medad_run(tmp_path)
    result = bench.blended_normals(str(run.path), seed=0, images="dev")
    # The 13 unlabelled normals the protocol left unused (as in the devset test), every other one blended.
    assert result["images"] == "dev normals" and result["images_with_ground_truth"] == 7
    assert bench.blended_normals(str(run.path), seed=0)["images"] == "test normals"


def test_before_after_draws_a_row_per_image_and_two_columns_per_run(tmp_path):
    import before_after
    from PIL import Image

    from helpers import tiny_config
    from medsagan.inference import Detector
    from medsagan.train import fit

    run = str(fit(tiny_config(data={"synthetic_count": 48}), tmp_path / "run", progress=False))
    images, labels = before_after.test_images(Detector.open(run, "cpu"), run, 2)
    assert list(labels) == [0, 0, 1, 1] and images.dtype == torch.uint8
    before_after.figure({"before": run, "after": run}, 2, tmp_path / "grid.png")
    width, height = Image.open(tmp_path / "grid.png").size
    assert (width, height) == (round(1.6 * 5 * 110), round(1.7 * 4 * 110))  # 5 columns, 4 rows at dpi 110


def test_remap_refits_a_runs_maps_without_retraining_and_keeps_its_scores(tmp_path):
    import remap

    from helpers import tiny_config
    from medsagan import fit
    from medsagan.evaluate.scoring import score_images
    from medsagan.runs import RunDir, load_detector

    run = fit(tiny_config(), tmp_path / "run", progress=False)
    with pytest.raises(SystemExit, match=r"only model\.map_"):
        remap.remap(str(run), str(tmp_path / "no"), ["train.iterations=9"])
    copy = remap.remap(str(run), str(tmp_path / "copy"), ["model.map_sigma=1", "model.map_reference=normals"])
    assert not (RunDir(run).reference).exists() and (RunDir(copy).reference).is_file()
    assert RunDir(copy).load_config().model.map_sigma == 1.0
    images = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    original, remapped = (score_images(load_detector(r, "cpu")[0], images, keep_maps=True) for r in (run, copy))
    np.testing.assert_array_equal(original.scores, remapped.scores)
    assert not np.allclose(original.maps, remapped.maps)
