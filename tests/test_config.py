import re
from pathlib import Path

import pytest
import yaml

from medsagan.config import Config, decay_window, load_config, parse_overrides, selection_start
from medsagan.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# Every value the paper and the official code fix (the spec's hyper-parameter table, official main.py,
# solver.py, model.py, data_loader.py and train.sh at zzr728/SAGAN 2fa5bd7), written out here by hand, so
# that neither the defaults nor configs/paper.yaml can drift from them unnoticed.
PAPER = {
    "model.architecture": "sagan",
    "model.image_size": 64,  # paper Sec. 3.1; main.py:40
    "model.channels": 1,  # model.py:49, data_loader.py:18
    "model.patches": 2,  # solver.py:68
    "model.conv_dim": 64,  # main.py:41
    "model.residual_blocks": 6,  # main.py:43
    "model.acm": True,
    "model.arrm": True,
    "model.mask_keep": 0.95,  # paper Eq. 1; model.py literal
    "model.d_conv_dim": 64,  # main.py:42
    "model.d_layers": 6,  # main.py:44
    "model.d_slope": 0.01,  # model.py: LeakyReLU(0.01)
    "data.anomaly_ratio": 0.6,  # data_loader.py ar
    "loss.lambda_id": 1.0,  # main.py:46
    "loss.lambda_rec": 1.0,  # solver.py:250, hard-coded
    "loss.lambda_gp": 10.0,  # main.py:45
    "loss.gp_every": 1,  # the penalty on every critic step
    "loss.pseudo_anomaly": "fpi",  # paper Sec. 3.1
    "loss.critic_augment": "",  # no augmentation: data_loader.py:158-162
    "loss.critic_real_mask": False,
    "train.iterations": 100_000,  # main.py:51, train.sh
    "train.batch_size": 32,  # train.sh:1
    "train.n_critic": 2,  # main.py:55
    "train.lr_g": 5e-5,  # main.py:53
    "train.lr_d": 5e-5,  # main.py:54
    "train.beta1": 0.5,  # solver.py:80-81
    "train.beta2": 0.999,
    "train.lr_schedule": "constant",  # the official decay ends at 0.999 lr0: a constant rate
    "train.precision": "float32",
    "train.ema_half_life": 0.0,
    "train.reuse_restoration": False,
}


def test_defaults_are_the_papers():
    cfg = load_config().to_dict()
    assert {key: cfg[key.split(".")[0]][key.split(".")[1]] for key in PAPER} == PAPER
    assert load_config(preset="paper").to_dict() == Config().to_dict()


def test_paper_yaml_lists_exactly_the_defaults():
    assert load_config(CONFIGS / "paper.yaml").to_dict() == Config().to_dict()
    listed = yaml.safe_load((CONFIGS / "paper.yaml").read_text())
    every = Config().to_dict()
    assert {s: sorted(keys) for s, keys in listed.items() if isinstance(keys, dict)} == {
        s: sorted(keys) for s, keys in every.items() if isinstance(keys, dict)
    }, "configs/paper.yaml must list every key, with its default"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_read_back_as_saved(path, tmp_path):
    cfg = load_config(path)
    cfg.save(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_layers_apply_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: fast\ntrain:\n  iterations: 77\n  seed: 3\n")
    cfg = load_config(path, parse_overrides(["train.seed=9", "loss.fpi_half_width=[0.1, 0.3]"]))
    assert cfg.model.conv_dim == 16  # from the preset
    assert cfg.train.iterations == 77  # file over preset
    assert cfg.train.seed == 9  # override over file
    assert cfg.loss.fpi_half_width == (0.1, 0.3)


def test_unknown_keys_and_bad_values_name_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  conv_dims: 8\n")
    with pytest.raises(ConfigError, match=r"unknown config key model\.conv_dims; did you mean model\.conv_dim\?"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"unknown config key modle; did you mean model\?"):
        load_config(overrides={"modle": {}})
    with pytest.raises(ConfigError, match=r"train\.iterations must be int, got 'many'"):
        load_config(overrides=parse_overrides(["train.iterations=many"]))
    with pytest.raises(ConfigError, match=r"model\.acm must be bool"):
        load_config(overrides=parse_overrides(["model.acm=3"]))
    with pytest.raises(ConfigError, match=r"loss\.pseudo_anomaly = 'perlin' is not one of fpi, cutpaste"):
        load_config(overrides=parse_overrides(["loss.pseudo_anomaly=perlin"]))
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        load_config(preset="huge")
    with pytest.raises(ConfigError, match="is not key=value"):
        parse_overrides(["train.iterations"])
    with pytest.raises(ConfigError, match=r"config file .*missing\.yaml does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(preset="fast", overrides=parse_overrides(["data.path=/x", "model.channels=3"]))
    cfg.save(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_numbers_in_exponent_form_are_numbers():
    cfg = load_config(overrides=parse_overrides(["train.lr_g=1e-4", "train.iterations=2e3"]))
    assert cfg.train.lr_g == 1e-4 and cfg.train.iterations == 2000
    with pytest.raises(ConfigError, match=r"train\.iterations must be int, got 2500\.5"):
        load_config(overrides=parse_overrides(["train.iterations=2500.5"]))


def test_config_is_frozen_and_replace_checks_again():
    import dataclasses

    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.iterations = 5
    assert cfg.replace(train={"iterations": 5}).train.iterations == 5 and cfg.train.iterations == 100_000
    with pytest.raises(ConfigError, match=r"train\.iterations = 0 is out of range"):
        cfg.replace(train={"iterations": 0})


def test_choices_come_from_the_types_and_moved_keys_say_where():
    from medsagan.config import choices

    assert choices("data.source") == ("auto", "medad", "folder", "classes", "medmnist", "synthetic")
    assert choices("loss.pseudo_anomaly") == ("fpi", "cutpaste")
    with pytest.raises(ConfigError, match=r"loss\.pseudo_anomaly = 'blend' is not one of fpi, cutpaste"):
        load_config(overrides={"loss": {"pseudo_anomaly": "blend"}})
    with pytest.raises(ConfigError, match=r"has moved: set evaluation\.threshold_specificity"):
        load_config(overrides={"train": {"threshold_specificity": 0.9}})


def test_decay_is_a_share_of_the_run_and_is_saved_in_iterations():
    cfg = load_config(preset="fast", overrides={"train": {"iterations": 3000}})
    fixed = cfg.fixed_schedule().train
    assert (fixed.lr_decay_start, fixed.lr_decay_length) == (2000, 1000)  # fast decays over the last third
    extended = cfg.fixed_schedule().replace(train={"iterations": 6000}).fixed_schedule().train
    assert (extended.lr_decay_start, extended.lr_decay_length) == (2000, 1000)  # unchanged by a longer run
    half = load_config(preset="fast", overrides={"train": {"lr_decay_start": 0.5, "iterations": 2000}})
    assert decay_window(half.train) == (1000, 1000)
    paper = load_config().fixed_schedule().train
    assert (paper.lr_decay_start, paper.lr_decay_length) == (50_000, 50_000)  # official num_iters_decay


def test_selection_start_is_a_share_of_the_run_saved_in_iterations_and_must_lie_inside_it():
    fixed = load_config(preset="fast", overrides={"train": {"iterations": 3000}}).fixed_schedule()
    assert selection_start(fixed) == 600 and fixed.evaluation.select_from == 600.0
    assert selection_start(fixed.replace(train={"iterations": 6000})) == 600  # kept by a longer run
    assert selection_start(load_config(preset="fast").fixed_schedule()) == 400  # the preset's 2000 iterations
    assert selection_start(load_config()) == 0  # the paper's preset may choose any checkpoint
    with pytest.raises(ConfigError, match=r"evaluation.select_from = 700 is past train.iterations = 500"):
        load_config(preset="fast", overrides={"train": {"iterations": 500}, "evaluation": {"select_from": 700}})


def test_baseline_preset_is_brainomaly_without_the_restoration_loss():
    cfg = load_config(preset="baseline")
    assert cfg.model.architecture == "baseline" and cfg.loss.lambda_rec == 0.0


def test_importing_medsagan_has_no_side_effects():
    import subprocess
    import sys

    code = (
        "import os, sys; os.umask(0o027); import medsagan; after = os.umask(0o022);"
        "print(after == 0o027, 'matplotlib.pyplot' in sys.modules, 'medsagan.train' in sys.modules,"
        " callable(medsagan.evaluate_run))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False", "False", "True"]  # umask kept, no pyplot, training code not loaded


def test_a_run_saved_before_a_key_existed_reads_back_as_it_ran(tmp_path):
    from medsagan.runs import RunDir

    values = load_config(preset="fast").to_dict()
    keys = (
        ("data", "val_unlabeled_fraction"),
        ("train", "ema_half_life"),
        ("data", "labeled_size"),
        ("model", "d_slope"),
        ("evaluation", "select_from"),
    )
    for section, name in keys:
        del values[section][name]
    (tmp_path / "config.yaml").write_text(__import__("yaml").safe_dump(values))
    cfg = RunDir(tmp_path).load_config()
    assert cfg.data.val_unlabeled_fraction == 0.0 and cfg.train.ema_half_life == 0.0 and cfg.data.labeled_size == -1
    assert cfg.model.d_slope == 0.01  # the official critic
    assert cfg.evaluation.select_from == 0.0  # selection could choose any checkpoint
    assert load_config().data.val_unlabeled_fraction == 0.1  # a new run holds unlabelled images out


@pytest.mark.parametrize(("amp", "precision"), [(True, "bfloat16"), (False, "float32")])
def test_a_run_saved_with_the_old_amp_switch_reads_back_in_its_precision(tmp_path, amp, precision):
    from medsagan.runs import RunDir

    values = load_config(preset="fast").to_dict()
    del values["train"]["precision"]
    values["train"]["amp"] = amp
    (tmp_path / "config.yaml").write_text(__import__("yaml").safe_dump(values))
    assert RunDir(tmp_path).load_config().train.precision == precision
    with pytest.raises(ConfigError, match=r"train\.amp was replaced by train\.precision"):
        load_config(overrides={"train": {"amp": amp}})


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", ".nan"])
@pytest.mark.parametrize("key", ["train.lr_g", "loss.lambda_gp", "data.anomaly_ratio", "evaluation.select_from"])
def test_non_finite_numbers_are_refused_by_name(key, value):
    from medsagan.config import parse_overrides

    with pytest.raises(ConfigError, match=re.escape(key) + " = .* is not a finite number"):
        load_config(overrides=parse_overrides([f"{key}={value}"]))


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, -0.1])
def test_threshold_specificity_is_range_checked_in_its_own_section(value):
    with pytest.raises(ConfigError, match=r"evaluation\.threshold_specificity = .* is out of range"):
        load_config(overrides={"evaluation": {"threshold_specificity": value}})
