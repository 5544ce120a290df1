"""model.ensemble: members trained as ordinary runs, restoring as one through the mean of their restorations."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from helpers import tiny_config
from medsagan.cli import main
from medsagan.compute import training_compute
from medsagan.errors import ConfigError, RunError
from medsagan.evaluate.scoring import score_images
from medsagan.files import load_tensors
from medsagan.inference import Detector
from medsagan.models import Ensemble, SAGANGenerator, anomaly_map, build_generator, image_score
from medsagan.runs import RunDir, load_detector
from medsagan.train import fit

MODEL = {"ensemble": 2, "residual": "logit", "map_reference": "normals", "map_sigma": 1.0}


def test_the_ensemble_restores_with_the_mean_of_its_members():
    torch.manual_seed(0)
    cfg = tiny_config(model={"ensemble": 3}).model
    ensemble = build_generator(cfg).eval()
    assert isinstance(ensemble, Ensemble) and len(ensemble.members) == 3
    assert isinstance(build_generator(tiny_config().model), SAGANGenerator)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = sum(member(x) for member in ensemble.members) / 3
        assert torch.allclose(ensemble(x), expected, atol=1e-6)
    assert not torch.allclose(ensemble.members[0](x), ensemble.members[1](x))  # members start apart


def test_an_ensemble_refuses_settings_that_would_train_its_members_apart():
    with pytest.raises(ConfigError, match=r"train\.time_budget plans one generator"):
        tiny_config(model={"ensemble": 2}, train={"time_budget": "5m"})
    with pytest.raises(ConfigError, match=r"data\.unlabeled_draw = prefix"):
        tiny_config(model={"ensemble": 2}, data={"unlabeled_draw": "random"})


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("ensemble")
    # One thread: the test below compares a member with a run trained apart, weight for weight, and a float
    # reduction split over threads need not add up in the same order twice.
    torch.set_num_threads(1)
    return RunDir(fit(tiny_config(model=MODEL, train={"seed": 3}), base / "run", progress=False)), base


@pytest.mark.slow
def test_each_member_is_the_run_its_seed_makes_and_best_pt_holds_their_choices(ensemble_run):
    run, base = ensemble_run
    members = run.members()
    assert [m.load_config().train.seed for m in members] == [3, 4]
    assert all(m.load_config().model.ensemble == 1 for m in members)
    torch.set_num_threads(1)
    alone = RunDir(fit(tiny_config(model={**MODEL, "ensemble": 1}, train={"seed": 4}), base / "alone", progress=False))
    same, _ = alone.load_best()
    member, _ = members[1].load_best()
    assert all(torch.equal(same[k], member[k]) for k in same)

    weights, chosen = run.load_best()
    for k, m in enumerate(members):
        own, selection = m.load_best()
        assert all(torch.equal(weights[f"members.{k}.{name}"], value) for name, value in own.items())
        assert str(selection.iteration) in chosen.selection
    assert "mean restoration of 2 members" in chosen.selection
    assert run.calibration.is_file() and run.reference.is_file()
    assert run.train_seconds() == pytest.approx(sum(m.train_seconds() for m in members))
    counted = training_compute(run.path)
    assert counted["training_tflop"] > sum(p["training_tflop"] for p in counted["members"]) * 0.999
    assert counted["iterations"] == sum(m.load_config().train.iterations for m in members)


@pytest.mark.slow
def test_the_ensemble_scores_the_mean_restoration_in_pytorch_and_onnx(ensemble_run, tmp_path):
    run, _ = ensemble_run
    detector, _, _ = load_detector(run.path, "cpu")
    images = torch.randint(0, 256, (5, 1, 32, 32), dtype=torch.uint8)
    scored = score_images(detector, images, keep_maps=True)
    x = images.float() / 127.5 - 1
    with torch.no_grad():
        mean = torch.stack([m(x) for m in detector.generator.members]).mean(0)
    np.testing.assert_allclose(scored.scores, image_score(anomaly_map(x, mean)).numpy(), rtol=1e-5)

    onnx_path = tmp_path / "ensemble.onnx"
    result = CliRunner().invoke(main, ["export", str(run.path), "--out", str(onnx_path)])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(Detector.open(onnx_path).score(images).scores, scored.scores, rtol=1e-5)


@pytest.mark.slow
def test_an_ensemble_resumes_member_by_member(ensemble_run, tmp_path):
    run, _ = ensemble_run
    torch.set_num_threads(1)  # as the fixture's ensemble trained, so the weights can be compared exactly
    cfg = tiny_config(model=MODEL, train={"seed": 3})
    fit(cfg.replace(model={"ensemble": 1}), tmp_path / "cut" / "members" / "0", progress=False)
    cfg.save(tmp_path / "cut" / "config.yaml")  # killed after its first member
    cut = RunDir(fit(RunDir(tmp_path / "cut").resumed_config(), tmp_path / "cut", resume=True, progress=False))
    first, second = (load_tensors(r.path / "best.pt")["generator"] for r in (run, cut))
    assert all(torch.equal(first[k], second[k]) for k in first)

    finished = {p: p.stat().st_mtime_ns for m in cut.members() for p in m.states()}
    fit(cut.resumed_config(), cut.path, resume=True, progress=False)  # nothing left to train
    assert {p: p.stat().st_mtime_ns for m in cut.members() for p in m.states()} == finished
    with pytest.raises(RunError, match="resumes its members as they saved themselves"):
        fit(cut.resumed_config({"iterations": 12}), cut.path, resume=True, progress=False)


@pytest.mark.slow
def test_the_report_names_the_members_instead_of_one_checkpoint(ensemble_run, tmp_path):
    from medsagan.viz.report import build_report

    run, _ = ensemble_run
    page = build_report(run.path, out=tmp_path / "report.html", device="cpu").read_text()
    assert "Weights: the mean restoration of 2 members, chosen at iterations" in page
    assert "Checkpoint: iteration" not in page
