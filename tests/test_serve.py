"""The local web app: the endpoint over real HTTP on 127.0.0.1, and the page in headless chromium."""

import shutil
import socket
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers import blob_image, tiny_config, write_dicom, write_png
from medsagan.data.readers import load_resized
from medsagan.errors import DataError
from medsagan.inference import Detector
from medsagan.records import Separation
from medsagan.serve import create_app, is_loopback, serve
from medsagan.train import fit

httpx = pytest.importorskip("httpx")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    run = fit(tiny_config(), tmp_path_factory.mktemp("serve") / "run", progress=False)
    app = create_app(Detector.open(run, "cpu"), max_upload_mb=0.1)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", run
    server.should_exit = True
    thread.join(timeout=10)


def upload(url, path):
    with open(path, "rb") as handle:
        return httpx.post(f"{url}/predict", files={"file": (path.name, handle)}, timeout=60)


def test_good_images_get_a_score_a_verdict_and_a_heatmap(server, tmp_path):
    url, run = server
    png = write_png(tmp_path / "chest.png", blob_image(np.random.default_rng(0), 48))
    answer = upload(url, png)
    assert answer.status_code == 200
    body = answer.json()
    assert body["panel"].startswith("data:image/png;base64,") and isinstance(body["abnormal"], bool)
    assert body["abnormal"] == (body["score"] >= body["threshold"])
    assert 0 <= body["where"]["x0"] < body["where"]["x1"] <= 1 and 0 <= body["where"]["y0"] < body["where"]["y1"] <= 1
    expected = Detector.open(run, "cpu").score(torch.tensor(load_resized(png, 32, 1)[None])).scores[0]
    assert body["score"] == pytest.approx(float(expected), rel=1e-6)  # the same score as predict
    dicom = write_dicom(tmp_path / "scan", np.linspace(0, 4095, 40 * 40).reshape(40, 40).astype(np.uint16))
    assert upload(url, dicom).status_code == 200  # no suffix: recognised by content
    page = httpx.get(url, timeout=30)
    assert page.status_code == 200 and "<title>medsagan</title>" in page.text


@pytest.mark.parametrize(
    ("content", "status", "message"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 422, "unreadable or corrupt image"),
        (b"%PDF-1.7 not an image", 415, "not a PNG, JPEG, TIFF, BMP or DICOM"),
        (b"", 400, "empty file"),
        (b"\x89PNG" + b"\x00" * 200_000, 413, "upload limit"),
    ],
    ids=["corrupt", "wrong-type", "empty", "oversized"],
)
def test_bad_uploads_get_a_4xx_with_a_clear_error(server, tmp_path, content, status, message):
    url, _ = server
    path = tmp_path / "upload.png"
    path.write_bytes(content)
    answer = upload(url, path)
    assert answer.status_code == status and message in answer.json()["error"]


def test_a_request_without_the_file_field_and_a_pixel_bomb(server, tmp_path):
    url, _ = server
    assert httpx.post(f"{url}/predict", data={"other": "x"}, timeout=30).status_code == 400
    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("L", (9000, 9000)).save(bomb)  # 81 M pixels in a few KB
    answer = upload(url, bomb)
    assert answer.status_code == 422 and "pixels, over the limit" in answer.json()["error"]


def test_the_server_binds_to_this_machine_unless_told_otherwise(server):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    with pytest.raises(DataError, match="--allow-remote"):
        serve(str(server[1]), host="0.0.0.0")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (.ci/run installs it)")
def test_the_page_uploads_an_image_and_shows_its_heatmap(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    url, _ = server
    png = write_png(tmp_path / "chest.png", blob_image(np.random.default_rng(1), 48, abnormal=True))
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 900, "height": 700})
        page.goto(url)
        assert page.title() == "medsagan"
        page.set_input_files("#files", str(png))
        heatmap = page.wait_for_selector("img.heatmap", timeout=60_000)
        assert heatmap.evaluate("img => img.complete && img.naturalWidth") == 576  # the 3-tile panel
        assert "chest.png" in page.inner_text("#results") and "score" in page.inner_text("#results")
        page.screenshot(path=str(tmp_path / "page.png"))
        shutil.copy(tmp_path / "page.png", server[1].parent / "page.png")
        browser.close()
    from PIL import Image

    pixels = np.asarray(Image.open(tmp_path / "page.png").convert("RGB"), dtype=float)
    assert pixels.std() > 20


def test_an_oversized_upload_is_refused_by_its_declared_length_and_mid_stream_without_touching_disk(
    server, monkeypatch, tmp_path
):
    import tempfile as tempfile_module

    from starlette import formparsers

    url, _ = server
    made = []
    real = tempfile_module.SpooledTemporaryFile

    def watched(*args, **kwargs):
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile_module, "SpooledTemporaryFile", watched)
    monkeypatch.setattr(formparsers, "SpooledTemporaryFile", watched)  # where the form parser would spool
    limit = int(0.1 * 1024 * 1024)
    declared = httpx.post(f"{url}/predict", files={"file": ("big.png", b"\x89PNG" + b"\x00" * (2 * limit))}, timeout=60)
    assert declared.status_code == 413 and "upload limit" in declared.json()["error"]

    def chunks():  # no Content-Length: the server must stop reading once the limit is passed
        for _ in range(40):
            yield b"\x00" * 65536

    streamed = httpx.post(
        f"{url}/predict",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=x"},
        timeout=60,
    )
    assert streamed.status_code == 413
    assert not made  # nothing was spooled to a temporary file
    form = httpx.post(f"{url}/predict", files={"file": ("ok.png", b"\x89PNG")}, timeout=60)
    assert form.status_code != 413 and not made  # a small upload is parsed in memory too
    png = write_png(tmp_path / "ok.png", blob_image(np.random.default_rng(0)))
    assert upload(url, png).status_code == 200  # the server still answers


def test_the_page_warns_when_the_runs_weights_do_not_separate_its_validation_images(server):
    def page(model) -> str:
        return next(route for route in create_app(model).routes if route.path == "/").endpoint()

    model = Detector.open(server[1], "cpu")
    assert 'id="warning"' not in page(replace(model, calibration=None))
    failing = Separation(0.51, 0.45, 20, 20, "held-out unlabelled images")
    shown = page(replace(model, calibration=replace(model.calibration, separation=failing)))
    assert 'id="warning"' in shown and "AUC 0.510 of 20 held-out normals against 20 held-out unlabelled" in shown
