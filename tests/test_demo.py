import json

import pytest

from helpers import TINY as TINY_SECTIONS
from medsagan.config import merge
from medsagan.demo import run_demo

TINY = merge(TINY_SECTIONS, {"train": {"validate_every": 2, "checkpoint_every": 2}})


@pytest.mark.slow
def test_demo_trains_evaluates_draws_and_reuses_its_run(tmp_path):
    text = run_demo(tmp_path / "demo", iterations=4, device="cpu", progress=False, overrides=TINY)
    assert "test AUC" in text and str(tmp_path / "demo" / "panels") in text
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    metrics = json.loads((tmp_path / "demo" / "run" / "evaluation" / "test" / "metrics.json").read_text())
    assert summary["n_normal"] == summary["n_abnormal"] == 8 and summary["test_auc"] == metrics["auc"]
    assert f"test AUC {metrics['auc']:.3f}, AP {metrics['ap']:.3f}" in text
    panels = sorted(p.name for p in (tmp_path / "demo" / "panels").iterdir())
    assert panels == [f"{kind}-{i}.png" for kind in ("highest", "lowest") for i in (1, 2, 3, 4)]
    best = tmp_path / "demo" / "run" / "best.pt"
    stamp = best.stat().st_mtime_ns
    run_demo(tmp_path / "demo", iterations=4, device="cpu", progress=False, overrides=TINY)
    assert best.stat().st_mtime_ns == stamp  # a finished demo is reused, not retrained
    run_demo(tmp_path / "demo", iterations=6, device="cpu", progress=False, overrides=TINY)
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["iterations"] == 6
    assert (tmp_path / "demo" / "run" / "checkpoints" / "state-00000006.pt").is_file()
