"""Selection signals: the validation AUC, the pseudo-anomaly AUC of held-out normals, and their mean."""

import json

import pytest
import torch

from helpers import tiny_config
from medsagan.data.dataset import build_training_data
from medsagan.data.sources import open_source
from medsagan.errors import ConfigError
from medsagan.evaluate.selection import COMBINED, PSEUDO, pseudo_validation, validation_metric
from medsagan.files import load_tensors
from medsagan.models import AnomalyDetector, build_generator
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
