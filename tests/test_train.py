import json

import pytest
import torch
import yaml

from helpers import tiny_config
from medsagan.data import sampler as sampler_module
from medsagan.errors import ConfigError, RunError
from medsagan.files import load_tensors
from medsagan.runs import RunDir
from medsagan.train import fit, lr_factor


def weights(run_dir):
    states = sorted((run_dir / "checkpoints").glob("state-*.pt"))
    state = load_tensors(states[-1])
    return state["generator"], state["critic"], state["iteration"]


def iterations_logged(run_dir):
    return [json.loads(line)["iteration"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_fit_writes_a_complete_run(tmp_path):
    run = fit(tiny_config(), tmp_path / "run", progress=False)
    for name in ("config.yaml", "data.json", "log.jsonl", "best.pt", "calibration.json"):
        assert (run / name).is_file(), name
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == [
        "state-00000002.pt",
        "state-00000004.pt",
        "state-00000006.pt",
    ]
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [r for r in records if "D/loss" in r]
    assert [r["iteration"] for r in losses] == [2, 4, 6]
    assert all("G/identity" in r and "G/restoration" in r and "G/adversarial" in r for r in losses)
    selection = [r for r in records if "val/aucp" in r]
    assert [r["iteration"] for r in selection] == [3, 6]
    best = load_tensors(run / "best.pt")
    assert best["metric"] == "val/aucp" and best["iteration"] in (3, 6)
    assert best["value"] == max(r["val/aucp"] for r in selection)
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["threshold"]["fitted_on"] == "held-out labelled normals"
    assert calibration["heatmap_scale"]["vmax"] > 0


def test_selection_only_chooses_checkpoints_from_select_from_on(tmp_path):
    run = fit(tiny_config(evaluation={"select_from": 4}), tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    logged = {r["iteration"]: r["val/aucp"] for r in records if "val/aucp" in r}
    assert sorted(logged) == [3, 6]  # validation before select_from is still logged
    best = load_tensors(run / "best.pt")
    assert best["iteration"] == 6 and best["value"] == logged[6]
    assert best["selection"].endswith("among the checkpoints from iteration 4")
    assert [r["best_iteration"] for r in records if "val/aucp" in r] == [0, 6]


def test_existing_run_directory_is_not_overwritten(tmp_path):
    fit(tiny_config(), tmp_path / "run", progress=False)
    with pytest.raises(RunError, match="already holds a run; continue it with --resume"):
        fit(tiny_config(), tmp_path / "run", progress=False)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path, monkeypatch):
    cfg = tiny_config(train={"iterations": 8, "checkpoint_every": 3, "validate_every": 4})
    fit(cfg, tmp_path / "straight", progress=False)

    calls = {"n": 0}
    original = sampler_module.PairSampler.next

    def dies_at_seven(self):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(sampler_module.PairSampler, "next", dies_at_seven)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(sampler_module.PairSampler, "next", original)
    assert weights(tmp_path / "resumed")[2] == 6
    before_kill = load_tensors(RunDir(tmp_path / "resumed").state_path(6))["train_seconds"]
    fit(cfg, tmp_path / "resumed", resume=True, progress=False)
    # The loop's time adds up over the parts: the killed part's seconds up to its checkpoint are kept.
    assert 0 < before_kill < RunDir(tmp_path / "resumed").train_seconds()

    g1, d1, it1 = weights(tmp_path / "straight")
    g2, d2, it2 = weights(tmp_path / "resumed")
    assert it1 == it2 == 8
    assert all(torch.equal(g1[k], g2[k]) for k in g1)
    assert all(torch.equal(d1[k], d2[k]) for k in d1)
    best1, best2 = load_tensors(tmp_path / "straight" / "best.pt"), load_tensors(tmp_path / "resumed" / "best.pt")
    assert best1["iteration"] == best2["iteration"] and best1["value"] == best2["value"]
    assert all(torch.equal(best1["generator"][k], best2["generator"][k]) for k in best1["generator"])
    assert iterations_logged(tmp_path / "resumed") == iterations_logged(tmp_path / "straight")  # none lost or doubled


def test_resume_without_a_checkpoint_starts_from_iteration_zero(tmp_path):
    (tmp_path / "run").mkdir()
    tiny_config().save(tmp_path / "run" / "config.yaml")
    (tmp_path / "run" / "log.jsonl").write_text('{"iteration": 2, "D/loss": 1.0}\n{"iterat')  # killed mid-line
    fit(tiny_config(), tmp_path / "run", resume=True, progress=False)
    assert weights(tmp_path / "run")[2] == 6
    assert iterations_logged(tmp_path / "run")[0] == 2 and (tmp_path / "run" / "calibration.json").is_file()


def test_resume_refuses_fewer_iterations_than_done(tmp_path):
    fit(tiny_config(), tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(RunError, match="already done 6 iterations; resume it with --iterations 6"):
        fit(tiny_config(train={"iterations": 4}), tmp_path / "run", resume=True, progress=False)
    assert (tmp_path / "run" / "config.yaml").read_text() == before


def test_patience_ends_the_run_when_the_selection_metric_stops_rising_and_saves_where(tmp_path, monkeypatch):
    import medsagan.train as train_module

    signal = iter([0.6, 0.7, 0.65, 0.64, 0.9, 0.95])  # validations at 2, 4, 6, 8, ...: best at 4, none after

    def scripted(*args, **kwargs):
        value = next(signal)
        return ("val/aucp", value), {"val/aucp": value}

    monkeypatch.setattr(train_module, "validation_metric", scripted)
    cfg = tiny_config(train={"iterations": 12, "validate_every": 2, "checkpoint_every": 5, "patience": 2})
    run = fit(cfg, tmp_path / "run", progress=False)
    saved = RunDir(run).load_config()
    assert saved.train.iterations == 8 and saved.train.patience == 2  # 2 validations (6, 8) without a better one
    assert weights(run)[2] == 8 and iterations_logged(run)[-1] == 8
    assert load_tensors(run / "best.pt")["iteration"] == 4 and (run / "calibration.json").is_file()
    fit(saved, run, resume=True, progress=False)  # finished: nothing more trains
    assert weights(run)[2] == 8 and RunDir(run).load_config().train.iterations == 8


def test_labelled_validation_selects_by_val_auc_and_youden_threshold(tmp_path):
    from helpers import make_folder_dataset, tiny_config

    root = make_folder_dataset(tmp_path / "data", n=8, val=True)
    run = fit(tiny_config(data={"path": str(root)}), tmp_path / "run", progress=False)
    assert load_tensors(run / "best.pt")["metric"] == "val/auc"
    assert json.loads((run / "calibration.json").read_text())["threshold"]["rule"] == "youden"


def test_without_unlabelled_images_training_uses_pseudo_anomalies(tmp_path):
    run = fit(tiny_config(data={"unlabeled_size": 0}), tmp_path / "run", progress=False)
    summary = json.loads((run / "data.json").read_text())
    assert summary["unlabeled"] == {"normal": 0, "abnormal": 0, "unknown": 0}
    assert summary["validation"]["kind"] == "none"


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [("constant", [1, 1, 1]), ("linear", [1, 0.5, 0.0]), ("official", [1, 1 - 1 / 2000, 1 - 2 / 2000])],
)
def test_learning_rate_schedules(schedule, expected):
    cfg = tiny_config(train={"iterations": 4000, "lr_decay_start": 2000, "lr_schedule": schedule}).train
    factor = lr_factor(cfg)
    assert [factor(s) for s in (2000, 3000, 4000)] == pytest.approx(expected)


def test_run_records_absolute_data_paths_so_it_works_from_anywhere(tmp_path, monkeypatch):
    from helpers import make_folder_dataset
    from medsagan.runs import RunDir

    make_folder_dataset(tmp_path / "data", n=6)
    monkeypatch.chdir(tmp_path)
    fit(tiny_config(data={"path": "data"}, train={"iterations": 2}), tmp_path / "run", progress=False)
    assert RunDir(tmp_path / "run").load_config().data.path == str((tmp_path / "data").resolve())


@pytest.mark.slow
def test_an_extended_run_moves_a_decay_not_yet_begun_and_its_weights_keep_changing(tmp_path):
    from medsagan.runs import RunDir

    linear = {"lr_schedule": "linear", "lr_decay_start": 0.5, "checkpoint_every": 2}
    fit(tiny_config(train={"iterations": 8, **linear}), tmp_path / "run", progress=False)
    run = RunDir(tmp_path / "run")
    for state in run.states()[1:]:
        state.unlink()  # as if stopped at iteration 2, before its decay began at 4
    run.best.unlink()
    fit(run.resumed_config({"iterations": 16}), run.path, resume=True, progress=False)
    saved = run.load_config().train
    assert (saved.iterations, saved.lr_decay_start, saved.lr_decay_length) == (16, 8, 8)
    assert lr_factor(saved)(12) == pytest.approx(0.5)
    before = load_tensors(run.states()[-2])["generator"]
    after = load_tensors(run.states()[-1])["generator"]
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the last iterations still train


@pytest.mark.slow
def test_a_run_whose_decay_has_begun_is_not_extended_and_resume_keeps_what_the_run_is(tmp_path):
    from medsagan.runs import RunDir

    fit(tiny_config(train={"iterations": 8, "lr_schedule": "linear"}), tmp_path / "run", progress=False)
    run = RunDir(tmp_path / "run")
    with pytest.raises(RunError, match=r"rate near zero; start a new run with --iterations 12"):
        run.resumed_config({"iterations": 12})
    for key, value in (("seed", 5), ("lr_g", 1e-3), ("batch_size", 2)):
        with pytest.raises(RunError, match=rf"train\.{key} cannot change when a run is resumed"):
            run.resumed_config({key: value})
    assert run.resumed_config({"device": "cpu", "log_every": 1}).train.log_every == 1
    constant = fit(tiny_config(train={"iterations": 4}), tmp_path / "constant", progress=False)
    assert RunDir(constant).resumed_config({"iterations": 6}).train.iterations == 6


def test_evaluate_checks_leakage_from_the_saved_digests_without_reloading_training_data(tmp_path, monkeypatch):
    from medsagan.evaluate import results as report

    run = fit(tiny_config(), tmp_path / "run", progress=False)

    def refuse(*args, **kwargs):
        raise AssertionError("training pools reloaded")

    monkeypatch.setattr(report, "build_training_data", refuse)
    result = report.evaluate_run(run, device="cpu")
    assert result.n_normal == result.n_abnormal == 8


def test_evaluate_refuses_test_copies_of_training_images_or_leaves_them_out_and_lists_them(tmp_path):
    import shutil

    from helpers import make_folder_dataset
    from medsagan.errors import DataError
    from medsagan.evaluate import results as report

    root = make_folder_dataset(tmp_path / "data", n=12)
    copied = sorted((root / "test" / "normal").iterdir())[0]
    shutil.copy(copied, root / "normal" / "copy.png")
    run = fit(tiny_config(data={"path": str(root)}), tmp_path / "run", progress=False)
    with pytest.raises(DataError, match=r"1 evaluation images are byte-identical .*--drop-duplicates"):
        report.evaluate_run(run, device="cpu")
    result = report.evaluate_run(run, device="cpu", drop_duplicates=True)
    assert (result.n_normal, result.n_abnormal) == (5, 6)
    assert copied.name not in " ".join(result.paths)
    written = json.loads((result.output / "metrics.json").read_text())
    assert len(written["dropped_duplicates"]) == 1 and copied.name in written["dropped_duplicates"][0]


def make_trainer(**train):
    from medsagan.trainer import Trainer

    cfg = tiny_config(train=train)
    size = cfg.model.image_size
    images = torch.randint(0, 256, (16, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return Trainer(cfg, torch.device("cpu"), images, images.flip(0))


@pytest.mark.slow
def test_moving_average_follows_the_generator_with_its_half_life_and_is_what_gets_scored():
    trainer = make_trainer(ema_half_life=64.0)
    assert trainer.scored_generator is trainer.ema and not trainer.ema.training
    before = [p.clone() for p in trainer.ema.parameters()]
    trainer.iteration(1)  # critic only: the average does not move
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.ema.parameters(), strict=True))
    trainer.iteration(2)
    # 4 images seen: the ramp-up caps the half-life at 0.1 x 4 images, so the weight is 1 - 0.5 ** (4 / 0.4).
    weight = 1 - 0.5 ** (4 / 0.4)
    for old, average, current in zip(before, trainer.ema.parameters(), trainer.generator.parameters(), strict=True):
        torch.testing.assert_close(average, old + weight * (current - old))
    for step in range(3, 200):
        trainer.iteration(step)
    # Late in the run the half-life is the configured 64 images: the average lags the generator.
    pairs = zip(trainer.ema.parameters(), trainer.generator.parameters(), strict=True)
    distance = sum((a - c).abs().sum() for a, c in pairs)
    assert distance > 0
    state = trainer.state_dict()
    resumed = make_trainer(ema_half_life=64.0)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(resumed.ema.parameters(), trainer.ema.parameters(), strict=True))
    assert make_trainer().ema is None and "ema" not in make_trainer().state_dict()


def test_reusing_the_restoration_computes_the_same_step_as_two_passes():
    # Without the random mask the generator is deterministic, so sharing its restoration of the unlabelled
    # batch between the critic and generator steps must give the paper's update exactly (up to rounding).
    from medsagan.config import load_config, merge

    template = make_trainer()

    def trained(reuse):
        overrides = {"model": {"mask_keep": 1.0}, "train": {"reuse_restoration": reuse}}
        cfg = load_config(overrides=merge(template.cfg.to_dict(), overrides))
        torch.manual_seed(0)  # the same initial weights
        trainer = type(template)(cfg, torch.device("cpu"), template.normal_images, template.unlabeled_images)
        for step in range(1, 5):
            trainer.iteration(step)
        return trainer

    two_passes, reused = trained(False), trained(True)
    for a, b in zip(two_passes.generator.parameters(), reused.generator.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(two_passes.critic.parameters(), reused.critic.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.manual_seed(0)
    untrained = make_trainer().generator.parameters()
    assert any(not torch.equal(a, b) for a, b in zip(reused.generator.parameters(), untrained, strict=True))


@pytest.mark.slow
def test_auto_precision_is_chosen_once_per_run_and_kept_on_resume(tmp_path, monkeypatch):
    import medsagan.devices as devices
    from medsagan.runs import RunDir

    for native, expected in ((False, "float32"), (True, "bfloat16")):
        monkeypatch.setattr(devices, "native_bfloat16", lambda device, native=native: native)
        cfg = tiny_config(train={"precision": "auto", "iterations": 2})
        run = RunDir(fit(cfg, tmp_path / expected, progress=False))
        assert run.load_config().train.precision == expected
    # Continued on a machine without native bfloat16, the run keeps the precision it started in.
    monkeypatch.setattr(devices, "native_bfloat16", lambda device: False)
    run = RunDir(tmp_path / "bfloat16")
    fit(run.resumed_config({"iterations": 4}), run.path, resume=True, progress=False)
    cfg = run.load_config()
    assert cfg.train.precision == "bfloat16" and cfg.train.iterations == 4
    # The training passes run under autocast in bfloat16 only; "auto" here finds no native support.
    for precision, dtype in (("bfloat16", torch.bfloat16), ("auto", torch.float32), ("float32", torch.float32)):
        trainer = make_trainer(precision=precision)
        with trainer.autocast:
            assert trainer.generator.stem[0](torch.zeros(1, 1, 32, 32)).dtype == dtype


def test_a_lazy_penalty_runs_on_every_kth_critic_step_from_the_first():
    from medsagan.config import load_config, merge
    from medsagan.trainer import Trainer

    cfg = load_config(overrides=merge(tiny_config().to_dict(), {"loss": {"gp_every": 3}}))
    size = cfg.model.image_size
    images = torch.randint(0, 256, (16, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    trainer = Trainer(cfg, torch.device("cpu"), images, images.flip(0))
    penalised = [step for step in range(1, 8) if "D/gp" in trainer.iteration(step)]
    assert penalised == [1, 4, 7]


def test_a_schedule_in_epochs_sets_the_iterations_from_the_labelled_normals_and_saves_them(tmp_path):
    run = fit(tiny_config(train={"epochs": 2.0, "lr_schedule": "linear"}), tmp_path / "run", progress=False)
    schedule = json.loads((run / "data.json").read_text())["schedule"]
    normals = json.loads((run / "data.json").read_text())["labelled_normals"]
    expected = round(2.0 * normals / 4)
    assert schedule == {"epochs": 2.0, "labelled_normals": normals, "iterations": expected}
    saved = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert saved["iterations"] == expected and saved["epochs"] == 0.0
    assert saved["lr_decay_start"] == round(0.5 * expected)  # the share became an iteration of the new length
    assert max(iterations_logged(run)) == expected


@pytest.mark.slow
def test_a_run_in_epochs_resumed_with_its_unresolved_config_keeps_its_length_and_weights(tmp_path):
    cfg = tiny_config(train={"epochs": 3.0, "lr_schedule": "linear", "checkpoint_every": 2, "keep_checkpoints": 99})
    straight = fit(cfg, tmp_path / "straight", progress=False)
    length = RunDir(straight).load_config().train.iterations
    assert length > cfg.train.iterations  # the check below would pass trivially were the two lengths equal

    cut = RunDir(fit(cfg, tmp_path / "cut", progress=False))
    for later in cut.states()[2:]:
        later.unlink()  # as if killed after its second checkpoint
    fit(cfg, cut.path, resume=True, progress=False)
    assert cut.load_config().train.iterations == length
    assert max(iterations_logged(cut.path)) == length
    g1, _, _ = weights(straight)
    g2, _, it2 = weights(cut.path)
    assert it2 == length and all(torch.equal(g1[k], g2[k]) for k in g1)

    # Resumed with its saved config (as `medsagan train --resume` does), it keeps the record of its epochs.
    schedule = json.loads((straight / "data.json").read_text())["schedule"]
    for later in cut.states()[2:]:
        later.unlink()
    fit(cut.load_config(), cut.path, resume=True, progress=False)
    assert json.loads((cut.path / "data.json").read_text())["schedule"] == schedule


def test_a_length_given_twice_is_refused():
    with pytest.raises(ConfigError, match=r"train\.time_budget and train\.epochs"):
        tiny_config(train={"epochs": 3.0, "time_budget": "5m"})
