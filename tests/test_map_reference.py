"""model.map_reference: the held-out normals' mean map, fitted after training and taken off every map."""

import numpy as np
import pytest
import torch

from helpers import tiny_config
from medsagan import fit
from medsagan.data.dataset import build_training_data
from medsagan.data.sources import open_source
from medsagan.errors import RunError
from medsagan.evaluate.calibration import calibrate, fit_reference
from medsagan.evaluate.scoring import score_images
from medsagan.inference import Detector
from medsagan.runs import RunDir, load_detector


@pytest.fixture(scope="module")
def referenced_run(tmp_path_factory):
    cfg = tiny_config(model={"map_sigma": 1.0, "map_reference": "normals"})
    return fit(cfg, tmp_path_factory.mktemp("reference") / "run", progress=False), cfg


def test_the_reference_is_the_held_out_normals_mean_map_and_leaves_scores_alone(referenced_run):
    run, cfg = referenced_run
    detector, _, selection = load_detector(run, "cpu")
    reference = RunDir(run).load_reference(selection)
    assert reference.shape == (1, 32, 32) and torch.equal(detector.reference, reference)
    normals = build_training_data(open_source(cfg), cfg, RunDir(run).cache_dir(cfg)).val_normal.images
    referenced = score_images(detector, normals, keep_maps=True)
    detector.reference = None
    plain = score_images(detector, normals, keep_maps=True)
    np.testing.assert_allclose(referenced.maps, plain.maps - reference.numpy(), atol=1e-6)
    assert abs(referenced.maps.mean(axis=0)).max() < 1e-5  # the held-out normals' mean map is now zero
    np.testing.assert_array_equal(referenced.scores, plain.scores)
    # The heatmap scale was fitted on the referenced maps, so it sits near zero, far under the plain maps'.
    assert Detector.open(run, "cpu").heatmap_vmax < np.quantile(plain.maps, 0.999)


def test_the_normals_scored_while_fitting_the_reference_calibrate_as_a_second_pass_would(referenced_run):
    run, cfg = referenced_run
    detector, _, selection = load_detector(run, "cpu")
    data = build_training_data(open_source(cfg), cfg, RunDir(run).cache_dir(cfg))
    detector.reference = None
    reference, normals_scored = fit_reference(detector, data)
    detector.reference = reference
    one_pass = calibrate(detector, data, cfg.evaluation, selection, normals_scored)
    two_passes = calibrate(detector, data, cfg.evaluation, selection)
    assert one_pass.threshold == pytest.approx(two_passes.threshold, abs=1e-7)
    assert one_pass.heatmap_vmax == pytest.approx(two_passes.heatmap_vmax, abs=1e-6)
    assert one_pass.heatmap_vmax == pytest.approx(Detector.open(run, "cpu").heatmap_vmax, abs=1e-6)


def test_a_calibrated_run_without_its_reference_is_a_clear_error(referenced_run, tmp_path):
    run, _ = referenced_run
    RunDir(run).reference.rename(tmp_path / "moved.pt")
    try:
        with pytest.raises(RunError, match=r"reference\.pt: missing; refit it with `medsagan train --resume"):
            load_detector(run, "cpu")
    finally:
        (tmp_path / "moved.pt").rename(RunDir(run).reference)
