"""The HTML report: its numbers are the evaluation's, it is self-contained, and a real browser renders it."""

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from helpers import tiny_config
from medsagan.cli import main
from medsagan.train import fit
from medsagan.viz.report import bootstrap_intervals

pytestmark = pytest.mark.slow  # each test trains or exports a model

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    run = fit(tiny_config(train={"log_every": 2}), base / "run", progress=False)
    result = CliRunner().invoke(main, ["report", str(run), "--out", str(base / "report.html")])
    assert result.exit_code == 0, result.output
    return run, base / "report.html"


def test_report_holds_the_evaluations_numbers_and_is_self_contained(report):
    run, page = report
    text = page.read_text()
    metrics = json.loads((run / "evaluation" / "test" / "metrics.json").read_text())
    assert f'<b id="auc">{metrics["auc"]:.3f}</b>' in text and f'<b id="ap">{metrics["ap"]:.3f}</b>' in text
    threshold = metrics["at_threshold"]
    assert f"<td>{threshold['threshold']['value']:.5f}</td><td>{threshold['sensitivity']:.3f}</td>" in text
    assert text.count('class="panel"') >= 8 and "specificity 0.95 on this split" in text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # nothing fetched from a network
    where = metrics["localisation"]  # the synthetic data's lesions are known
    assert f"<td>pixel AUROC</td><td>{where['pixel_auroc']:.3f}</td>" in text
    assert f"<td>{where['aupro']:.3f}</td>" in text and 'id="localisation"' in text
    separation = metrics["separation"]  # the chosen weights' separation of the validation sets, in words
    data = json.loads((run / "data.json").read_text())["validation"]
    assert (separation["normal"], separation["positive"]) == (data["normal"], data["positive"])
    assert 'id="separation"' in text and f"AUC {separation['auc']:.3f} of {data['normal']} held-out normals" in text
    shown = html.unescape(text)
    assert "preset: paper" in shown and '"labelled_normals"' in shown and '"torch"' in shown


def test_bootstrap_intervals_are_seeded_and_cover_the_estimate():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(100, int), np.ones(100, int)]
    scores = rng.normal(size=200) + labels
    first, second = bootstrap_intervals(labels, scores), bootstrap_intervals(labels, scores)
    assert first == second and first["resamples"] == 2000
    low, high = first["auc"]
    from sklearn.metrics import roc_auc_score

    assert low < roc_auc_score(labels, scores) < high and 0.05 < high - low < 0.2


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (.ci/run installs it)")
def test_the_report_renders_in_a_headless_browser(report, tmp_path):
    _, page = report
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert "<title>medsagan report: run (test)</title>" in dom.stdout
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*browser, f"--screenshot={shot}", "--window-size=1300,1400", page.as_uri()], capture_output=True, timeout=120
    )
    shutil.copy(shot, page.parent / "screenshot.png")
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    assert pixels.shape[:2] == (1400, 1300)
    assert pixels.std() > 20 and (pixels < 100).mean() > 0.01  # text, curves and panels, not a blank page


def test_the_report_reuses_a_finished_evaluation_of_the_same_weights_and_redoes_a_stale_one(report, tmp_path):
    from medsagan.evaluate.results import finished_evaluation

    run, _ = report
    metrics = run / "evaluation" / "test" / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    reused = finished_evaluation(run)
    assert reused is not None and reused.auc == json.loads(metrics.read_text())["auc"]
    again = CliRunner().invoke(main, ["report", str(run), "--out", str(tmp_path / "again.html")])
    assert again.exit_code == 0, again.output
    assert metrics.stat().st_mtime_ns == stamp  # not evaluated twice

    best = run / "best.pt"
    best.touch()  # weights written after the evaluation: it no longer describes them
    assert finished_evaluation(run) is None
    redone = CliRunner().invoke(main, ["report", str(run), "--out", str(tmp_path / "redone.html")])
    assert redone.exit_code == 0, redone.output
    assert metrics.stat().st_mtime_ns != stamp and finished_evaluation(run) is not None
