import json

from medsagan.demo import run_demo

TINY = {
    "model": {"conv_dim": 4, "residual_blocks": 1, "d_conv_dim": 4, "image_size": 32},
    "data": {"synthetic_count": 24},
    "train": {"batch_size": 4, "validate_every": 2, "checkpoint_every": 2},
}


def test_demo_trains_evaluates_draws_and_reuses_its_run(tmp_path):
    text = run_demo(tmp_path / "demo", iterations=4, device="cpu", progress=False, overrides=TINY)
    assert "test AUC" in text and str(tmp_path / "demo" / "panels") in text
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["n_normal"] == summary["n_abnormal"] == 8 and 0 <= summary["test_auc"] <= 1
    panels = sorted(p.name for p in (tmp_path / "demo" / "panels").iterdir())
    assert panels == [f"{kind}-{i}.png" for kind in ("highest", "lowest") for i in (1, 2, 3, 4)]
    best = tmp_path / "demo" / "run" / "best.pt"
    stamp = best.stat().st_mtime_ns
    run_demo(tmp_path / "demo", iterations=4, device="cpu", progress=False, overrides=TINY)
    assert best.stat().st_mtime_ns == stamp  # a finished demo is reused, not retrained
    run_demo(tmp_path / "demo", iterations=6, device="cpu", progress=False, overrides=TINY)
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["iterations"] == 6
    assert (tmp_path / "demo" / "run" / "checkpoints" / "state-00000006.pt").is_file()
