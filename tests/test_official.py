"""Official SAGAN generator checkpoints: names and shapes written from the official layer table, not from
medsagan's mapping, so the import is checked against an independent description."""

import pytest
import torch
from click.testing import CliRunner

from medsagan.cli import main
from medsagan.config import load_config
from medsagan.errors import RunError
from medsagan.models import build_generator
from medsagan.official import export_state, import_state, official_config, read_official
from medsagan.runs import load_detector


def official_state_dict(conv=64, blocks=6, bits=3, seed=0):
    """An official Generator's state dict (zzr728/SAGAN model.py), seeded values, from its layer table."""
    g = torch.Generator().manual_seed(seed)
    state = {}

    def conv_(name, out_ch, in_ch, k, bias=False, transposed=False):
        shape = (in_ch, out_ch, k, k) if transposed else (out_ch, in_ch, k, k)
        state[f"{name}.weight"] = torch.randn(shape, generator=g) * 0.05
        if bias:
            state[f"{name}.bias"] = torch.randn(out_ch, generator=g) * 0.05

    def norm(name, ch):  # InstanceNorm2d(affine=True, track_running_stats=True)
        state[f"{name}.weight"] = 1 + 0.1 * torch.randn(ch, generator=g)
        state[f"{name}.bias"] = 0.1 * torch.randn(ch, generator=g)
        state[f"{name}.running_mean"] = torch.randn(ch, generator=g)
        state[f"{name}.running_var"] = torch.rand(ch, generator=g) + 0.5
        state[f"{name}.num_batches_tracked"] = torch.tensor(1000)

    def residual1(name, in_ch, out_ch):  # ResidualBlock1: main (changes width), sc
        conv_(f"{name}.main.0", out_ch, in_ch, 3)
        norm(f"{name}.main.1", out_ch)
        conv_(f"{name}.sc.0", out_ch, out_ch, 3)
        norm(f"{name}.sc.1", out_ch)

    def gate(name, f, f_int):
        conv_(f"{name}.W_gate.0", f_int, f, 1, bias=True)
        conv_(f"{name}.W_x.0", f_int, f, 1, bias=True)
        conv_(f"{name}.psi.0", 1, f_int, 1, bias=True)

    c = conv
    conv_("layer1.0", c, 1, 7)
    norm("layer1.1", c)
    conv_("enc_layer1.0", 2 * c, c, 4)
    norm("enc_layer1.1", 2 * c)
    conv_("p_bn1.0", 2 * c, 2 * c + bits, 1, bias=True)
    conv_("enc_layer2.0", 4 * c, 2 * c, 4)
    norm("enc_layer2.1", 4 * c)
    conv_("p_bn2.0", 4 * c, 4 * c + bits, 1, bias=True)
    conv_("enc_layer3.0", 8 * c, 4 * c, 4)
    norm("enc_layer3.1", 8 * c)
    conv_("bn2.0", 8 * c, 8 * c + bits, 1, bias=True)
    for i in range(3, 3 + blocks):
        conv_(f"bn2.{i}.main.0", 8 * c, 8 * c, 3)
        norm(f"bn2.{i}.main.1", 8 * c)
        conv_(f"bn2.{i}.main.3", 8 * c, 8 * c, 3)
        norm(f"bn2.{i}.main.4", 8 * c)
    gate("gate1", 8 * c, 4 * c)
    residual1("dec_bn1", 16 * c, 8 * c)
    conv_("dec_layer1.0", 4 * c, 8 * c, 4, transposed=True)
    norm("dec_layer1.1", 4 * c)
    conv_("up_conv1.0", 2 * c, 4 * c, 4, transposed=True)
    norm("up_conv1.1", 2 * c)
    conv_("up_conv1.3", c, 2 * c, 4, transposed=True)
    norm("up_conv1.4", c)
    gate("gate2", 4 * c, 2 * c)
    residual1("dec_bn2", 8 * c, 4 * c)
    conv_("dec_layer2.0", 2 * c, 4 * c, 4, transposed=True)
    norm("dec_layer2.1", 2 * c)
    conv_("up_conv2.0", c, 2 * c, 4, transposed=True)
    norm("up_conv2.1", c)
    gate("gate3", 2 * c, c)
    residual1("dec_bn3", 4 * c, 2 * c)
    conv_("dec_layer3.0", c, 2 * c, 4, transposed=True)
    norm("dec_layer3.1", c)
    residual1("bn3", 3 * c, c)
    conv_("conv", 1, c, 7)
    return state


def test_the_paper_generator_imports_without_a_missing_or_unexpected_key():
    state = official_state_dict()
    assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k) == 44_758_979
    cfg = official_config(state)
    assert (cfg.model.conv_dim, cfg.model.residual_blocks, cfg.model.patches) == (64, 6, 2)
    generator = build_generator(cfg.model)
    weights = import_state(state, generator.state_dict(), "official.ckpt")
    generator.load_state_dict(weights)  # strict: every key present, none extra
    assert torch.equal(weights["to_map.weight"], state["conv.weight"])
    assert torch.equal(weights["bottleneck.6.main.4.bias"], state["bn2.8.main.4.bias"])


def test_export_and_import_round_trip_exactly():
    cfg = load_config(overrides={"model": {"conv_dim": 8, "residual_blocks": 2}})
    generator = build_generator(cfg.model)
    exported = export_state(generator.state_dict())
    assert set(exported) == set(official_state_dict(conv=8, blocks=2))  # the official names, running stats too
    back = import_state(exported, generator.state_dict(), "exported")
    assert all(torch.equal(back[k], v) for k, v in generator.state_dict().items())


def test_a_wrong_architecture_names_the_first_mismatched_key():
    state = official_state_dict(conv=8, blocks=2)
    expected = build_generator(official_config(state).model).state_dict()
    state["enc_layer2.0.weight"] = torch.zeros(3, 3, 4, 4)
    with pytest.raises(RunError, match=r"enc_layer2\.0\.weight has shape \[3, 3, 4, 4\], the generator needs"):
        import_state(state, expected, "bad.ckpt")
    renamed = {("x" + k if k == "gate2.psi.0.bias" else k): v for k, v in official_state_dict(conv=8, blocks=2).items()}
    with pytest.raises(RunError, match=r"unexpected key xgate2\.psi\.0\.bias"):
        import_state(renamed, expected, "bad.ckpt")
    del renamed["xgate2.psi.0.bias"]
    with pytest.raises(RunError, match=r"missing key gate2\.psi\.0\.bias"):
        import_state(renamed, expected, "bad.ckpt")


def test_import_official_makes_a_run_that_predict_accepts(tmp_path):
    from helpers import write_png

    path = tmp_path / "SAGAN_G.ckpt"
    torch.save({f"module.{k}": v for k, v in official_state_dict(conv=8, blocks=2).items()}, path)
    assert set(read_official(path)) == set(official_state_dict(conv=8, blocks=2))  # DataParallel prefix gone
    result = CliRunner().invoke(main, ["import-official", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    _, cfg, selection = load_detector(tmp_path / "run", "cpu")
    assert cfg.model.conv_dim == 8 and "official checkpoint" in selection.selection
    image = write_png(tmp_path / "x.png", 120, size=64)
    predicted = CliRunner().invoke(main, ["predict", str(tmp_path / "run"), str(image), "--out", str(tmp_path / "p")])
    assert predicted.exit_code == 0, predicted.output
    assert "no threshold" in predicted.output and "above the run's threshold" not in predicted.output
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    refused = CliRunner().invoke(main, ["import-official", str(tmp_path / "junk.ckpt"), "--out", str(tmp_path / "r2")])
    assert refused.exit_code == 2 and "junk.ckpt" in refused.stderr and not (tmp_path / "r2").exists()


def test_an_imported_run_evaluates_on_data_whose_pools_cannot_give_the_papers_ratio(tmp_path):
    import shutil

    from helpers import make_medad_dataset

    root = make_medad_dataset(tmp_path / "medad", abnormal_unlabeled=1)  # 0.6 of 8 unlabelled needs 4
    path = tmp_path / "SAGAN_G.ckpt"
    torch.save(official_state_dict(conv=8, blocks=2), path)
    args = ["import-official", str(path), "--out", str(tmp_path / "run"), "--data", str(root), "--image-size", "32"]
    assert CliRunner().invoke(main, args).exit_code == 0
    evaluated = CliRunner().invoke(main, ["evaluate", str(tmp_path / "run")])
    assert evaluated.exit_code == 0, evaluated.output
    # Its training draw is unknown, so a test image equal to any training-pool image is refused.
    shutil.copy(root / "images" / "a0.png", root / "images" / "s0.png")
    leaked = CliRunner().invoke(main, ["evaluate", str(tmp_path / "run")])
    assert leaked.exit_code == 2 and "a0.png" in leaked.stderr


@pytest.mark.parametrize("channels", [16 + 1000, 16 + 2, 16 + 4])
def test_a_fusion_layer_that_fits_no_patch_grid_is_named_not_turned_into_a_config_error(channels):
    state = official_state_dict(conv=8, blocks=2)
    state["p_bn1.0.weight"] = torch.zeros(8, channels, 3, 3)
    with pytest.raises(RunError, match=rf"bad\.ckpt: p_bn1\.0\.weight has {channels} input channels, which fits no"):
        official_config(state, source="bad.ckpt")
