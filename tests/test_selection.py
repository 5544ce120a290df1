"""Selection signals: the validation AUC, the pseudo-anomaly AUC of held-out normals, and their mean."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from helpers import tiny_config
from medsagan.data.dataset import build_training_data
from medsagan.data.sources import open_source
from medsagan.errors import ConfigError
from medsagan.evaluate.calibration import separation_of
from medsagan.evaluate.selection import COMBINED, PSEUDO, pseudo_validation, validation_metric
from medsagan.files import load_tensors
from medsagan.models import AnomalyDetector, build_generator
from medsagan.records import Calibration, Selection, Threshold
from medsagan.train import fit


def test_pseudo_anomalies_of_the_held_out_normals_are_fixed_and_differ_from_them_only_in_a_patch(tmp_path):
    cfg = tiny_config()
    data = build_training_data(open_source(cfg), cfg, tmp_path)
    first, second = pseudo_validation(data, cfg), pseudo_validation(data, cfg)
    assert torch.equal(first, second) and first.dtype == torch.uint8
    changed = (first.int() - data.val_normal.images.int()).abs().flatten(1) > 1
    assert changed.any(1).float().mean() >= 0.5  # a faint blend may round away, most do not
    assert (changed.float().mean(1) < 0.5).all()  # a patch, never the whole image


def test_every_validation_logs_all_signals_and_select_by_picks_the_one_named(tmp_path):
    run = fit(tiny_config(evaluation={"select_by": "combined"}), tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    logged = [r for r in records if PSEUDO in r]
    assert [r["iteration"] for r in logged] == [3, 6]
    for r in logged:
        assert r[COMBINED] == pytest.approx((r[PSEUDO] + r["val/aucp"]) / 2)
    best = load_tensors(run / "best.pt")
    assert best["metric"] == COMBINED and best["value"] == max(r[COMBINED] for r in logged)
    assert "pseudo-anomalies made from them" in json.loads((run / "data.json").read_text())["validation"]["selection"]


def test_a_pseudo_signal_without_held_out_normals_to_make_them_from_is_a_clear_error(tmp_path):
    cfg = tiny_config(evaluation={"select_by": "pseudo"})
    data = build_training_data(open_source(cfg), cfg, tmp_path)
    detector = AnomalyDetector(build_generator(cfg.model)).eval()
    with pytest.raises(ConfigError, match=r"evaluation\.select_by = 'pseudo' needs at least 2 held-out normals"):
        validation_metric(detector, data, "pseudo", None)
    (name, value), signals = validation_metric(detector, data, "pseudo", pseudo_validation(data, cfg))
    assert name == PSEUDO and value == signals[PSEUDO] and 0 <= value <= 1


def test_separation_is_the_validation_auc_with_its_chance_and_says_when_it_is_none():
    rng = np.random.default_rng(0)
    normal, shifted = rng.normal(0.0, 1.0, 70), rng.normal(1.0, 1.0, 70)
    apart = separation_of(normal, shifted, "held-out unlabelled images")
    together = separation_of(normal, rng.normal(0.0, 1.0, 20), "held-out unlabelled images")
    assert apart.auc == pytest.approx(roc_auc_score(np.r_[np.zeros(70), np.ones(70)], np.r_[normal, shifted]))
    assert apart.above_chance and apart.p_value < 1e-4 and (apart.normal, apart.positive) == (70, 70)
    assert not together.above_chance and 0.05 <= together.p_value <= 1
    assert "better than chance: AUC" in apart.sentence() and "Likely causes" not in apart.sentence()
    assert "do not tell the validation images apart" in together.sentence() and "Likely causes" in together.sentence()


def test_separation_auc_equals_scikit_learns_and_survives_calibration_json():
    normal, positive = np.array([0.1, 0.2, 0.3, 0.3]), np.array([0.3, 0.5, 0.05])
    found = separation_of(normal, positive, "labelled abnormal images of the val split")
    labels = np.r_[np.zeros(len(normal)), np.ones(len(positive))]
    assert found.auc == pytest.approx(roc_auc_score(labels, np.r_[normal, positive]))  # ties count a half
    threshold = Threshold(0.3, "youden", "labelled validation split", 4, 3)
    selection = Selection(10, "val/auc", 0.7, "AUC on the labelled validation split")
    record = json.loads(json.dumps(Calibration(threshold, 0.5, "rule", selection, found).to_dict()))
    assert record["separation"]["above_chance"] is False
    assert Calibration.from_dict(record).separation == found
    del record["separation"]  # a run calibrated before the check
    assert Calibration.from_dict(record).separation is None
