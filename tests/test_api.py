import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from helpers import tiny_config, write_dicom, write_png
from medsagan import fit, load

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_python_snippet_runs(tmp_path, monkeypatch):
    section = README.read_text().split("## Python API", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    write_png(tmp_path / "chest.png", 100, size=80)
    write_dicom(tmp_path / "scan.dcm", np.linspace(0, 4095, 70 * 70).reshape(70, 70).astype(np.uint16), bits_stored=12)
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert namespace["result"].scores.shape == (2,)
    metrics = namespace["metrics"]
    written = json.loads((metrics.output / "metrics.json").read_text())
    assert written["auc"] == metrics.auc and written["n_normal"] == metrics.n_normal == 20
    assert metrics.auc == roc_auc_score(metrics.labels, metrics.scores)


def test_model_scores_paths_arrays_and_tensors_alike(tmp_path):
    run = fit(tiny_config(), tmp_path / "run", progress=False)
    model = load(run)
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    path = write_png(tmp_path / "a.png", array)
    from_path = model.score(path).scores
    from_array = model.score(array).scores
    from_tensor = model.score(torch.from_numpy(array)[None, None]).scores
    assert np.allclose(from_path, from_array) and np.allclose(from_array, from_tensor)
    batch = model.score([path, array, np.stack([array] * 3, axis=-1)])
    assert batch.scores.shape == (3,) and batch.maps.shape == (3, 32, 32)
    assert np.allclose(batch.scores[0], from_path)
    assert model.threshold is not None


def test_a_colour_array_scores_as_the_same_pixels_read_from_a_file(tmp_path):
    run = fit(tiny_config(train={"iterations": 2}), tmp_path / "run", progress=False)
    model = load(run)
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    rgb[..., 0] //= 4  # unequal channels: the channel mean and ITU-R 601 luma differ here
    path = write_png(tmp_path / "colour.png", rgb, mode="RGB")
    from_file, from_array = model.score(path).scores, model.score(rgb).scores
    assert np.array_equal(from_file, from_array)
    assert np.array_equal(model.score(rgb.transpose(2, 0, 1)).scores, from_file)  # channels first too
    as_float = model.score(rgb.astype(np.float32) / 255).scores
    assert np.allclose(as_float, from_file, atol=2e-3)
