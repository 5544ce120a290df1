"""Metrics, thresholds, the scores CSV and the leakage check, against scikit-learn and hand-made cases."""

import csv
import io

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from medsagan.data.dataset import check_leakage
from medsagan.errors import DataError
from medsagan.evaluate.metrics import at_threshold, auc, average_precision, summary
from medsagan.evaluate.results import scores_csv
from medsagan.evaluate.thresholds import normal_quantile, verdict, youden


def test_auc_and_ap_by_hand():
    labels = np.array([0, 0, 1, 1])
    # Pairs (abnormal, normal) ranked right: (0.8 > 0.1), (0.8 > 0.4), (0.35 > 0.1); wrong: (0.35 < 0.4).
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    assert auc(labels, scores) == pytest.approx(3 / 4)
    # Ranked by score: 0.8 (hit, precision 1), 0.4 (miss), 0.35 (hit, precision 2/3), 0.1 (miss).
    assert average_precision(labels, scores) == pytest.approx((1 + 2 / 3) / 2)
    tied = np.array([0.5, 0.5, 0.5, 0.5])
    assert auc(labels, tied) == pytest.approx(0.5)


def test_metrics_match_scikit_learn_on_random_scores():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 500)
    scores = rng.normal(size=500) + 0.7 * labels
    assert auc(labels, scores) == roc_auc_score(labels, scores)
    assert average_precision(labels, scores) == average_precision_score(labels, scores)
    assert summary(labels, scores)["n_abnormal"] == int(labels.sum())


def test_one_class_is_refused_by_name():
    with pytest.raises(DataError, match=r"both normal and abnormal images; the labels hold only \[0\]"):
        auc(np.zeros(4, int), np.arange(4.0))


def test_confusion_counts_at_a_threshold():
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.6, 0.5, 0.9])
    result = at_threshold(labels, scores, 0.5)  # at the threshold counts as abnormal
    assert (result["tp"], result["fp"], result["tn"], result["fn"]) == (2, 1, 2, 0)
    assert result["sensitivity"] == 1.0 and result["specificity"] == pytest.approx(2 / 3)
    assert result["precision"] == pytest.approx(2 / 3) and result["f1"] == pytest.approx(0.8)
    assert [verdict(s, 0.5) for s in scores] == ["normal", "normal", "abnormal", "abnormal", "abnormal"]


def test_youden_picks_the_best_separating_cut():
    normal = np.array([0.1, 0.2, 0.3, 0.45])
    abnormal = np.array([0.4, 0.6, 0.7])
    threshold = youden(normal, abnormal, "validation")
    # At 0.6: sensitivity 2/3, specificity 1 (J = 0.667); at 0.4: 1 and 3/4 (J = 0.75), the best.
    assert threshold.value == pytest.approx(0.4)
    assert (threshold.rule, threshold.n_normal, threshold.n_abnormal) == ("youden", 4, 3)


def test_normal_quantile_leaves_the_asked_share_of_normals_below():
    normal = np.arange(1, 101) / 100.0
    threshold = normal_quantile(normal, 0.95, "held-out normals")
    assert threshold.value == pytest.approx(0.96)  # the next observed score above the 95 % quantile
    assert np.mean(normal < threshold.value) == pytest.approx(0.95)  # exactly 95 % of normals called normal
    assert threshold.rule == "normal-quantile-0.95" and threshold.n_abnormal == 0


def test_scores_csv_rows_labels_predictions_and_escaping():
    text = scores_csv(
        ["a.png", "=cmd.png"], ["/x/a.png", "-y/cmd.png"], np.array([0, 1]), np.array([0.123456789, 0.5]), 0.3
    )
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0] == {"id": "a.png", "path": "/x/a.png", "label": "0", "score": "0.12345679", "prediction": "normal"}
    assert rows[1] == {"id": "'=cmd.png", "path": "'-y/cmd.png", "label": "1", "score": "0.5", "prediction": "abnormal"}
    unlabelled = list(csv.DictReader(io.StringIO(scores_csv(["a"], ["a"], None, np.array([0.2]), None))))
    assert unlabelled == [{"id": "a", "path": "a", "score": "0.2"}]


def test_leakage_check_names_both_sides():
    check_leakage({"d1": "test/a.png"}, {"d2": "train/b.png"})  # different content: fine
    with pytest.raises(DataError, match=r"1 evaluation images are byte-identical .*: test/a\.png = train/b\.png"):
        check_leakage({"d1": "test/a.png", "d3": "test/c.png"}, {"d1": "train/b.png"})
