"""`medsagan serve`: a local web app to try a trained run on the images in front of you.

GET / serves one self-contained page (drop PNG, JPEG, TIFF, BMP or DICOM files; see score, verdict and
heatmap). POST /predict takes a multipart field `file` and answers JSON: score, abnormal, threshold and the
heatmap panel as a PNG data URI; a bad upload gets a 4xx with {"error": ...}, never a 500. Uploads are
decoded in memory, checked by content (not by name), and never written to disk.
"""

import base64
import io
import ipaddress
from email import policy
from email.parser import BytesParser

import numpy as np
import torch

from .data.dataset import to_model_range
from .data.readers import MAX_PIXELS, sniff
from .errors import DataError, MedsaganError
from .evaluate.localisation import top_region
from .records import separation_warning
from .viz.heatmaps import panel
from .viz.pages import render_page

MAX_UPLOAD_MB = 64
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and headers around the file, at most
LOOPBACK_HINT = "pass --allow-remote to serve on an address other machines can reach"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(model, max_upload_mb: float = MAX_UPLOAD_MB):
    """The FastAPI app around a loaded inference.Detector (a run or an ONNX file)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title="medsagan", docs_url=None, redoc_url=None)
    limit = int(max_upload_mb * 1024 * 1024)

    warning = separation_warning(model.calibration) or ""

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return render_page("app.html", limit_mb=f"{max_upload_mb:g}", max_pixels=f"{MAX_PIXELS:,}", warning=warning)

    too_large = f"larger than the {max_upload_mb:g} MB upload limit"

    @app.post("/predict")
    async def predict(request: Request):
        # The body is read here, in memory and no further than the limit: a form parser would spool it to disk.
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
            return _error(f"upload: {too_large}", 413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit + FORM_OVERHEAD:
                return _error(f"upload: {too_large}", 413)
        found = form_file(request.headers.get("content-type", ""), bytes(body))
        if found is None:
            return _error("send the image as a multipart form field named 'file'", 400)
        name, data = found
        if len(data) > limit:
            return _error(f"{name}: {too_large}", 413)
        return await run_in_threadpool(check_and_score, model, name, data)

    return app


def check_and_score(model, name: str, data: bytes):
    """The endpoint's answer for one uploaded file: its score, or a 4xx naming what is wrong with it."""
    if not data:
        return _error(f"{name}: empty file", 400)
    if sniff(data) is None:
        return _error(f"{name}: not a PNG, JPEG, TIFF, BMP or DICOM file (judged by its content)", 415)
    try:
        image = model.decode(data, name)
    except MedsaganError as err:
        return _error(str(err), 422)
    return score_one(model, image, name)


def form_file(content_type: str, body: bytes) -> tuple[str, bytes] | None:
    """(file name, bytes) of the multipart/form-data field `file`, parsed in memory; None when there is none."""
    if not content_type.lower().startswith("multipart/form-data"):
        return None
    header = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
    message = BytesParser(policy=policy.HTTP).parsebytes(header + body)
    if not message.is_multipart():
        return None
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_filename() or "upload", part.get_payload(decode=True) or b""
    return None


def _error(message: str, status: int):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


def score_one(model, image: np.ndarray, name: str) -> dict:
    """Score one decoded image: the JSON the endpoint answers, with the heatmap panel as a data URI."""
    result = model.score(torch.tensor(image[None]))
    score = float(result.scores[0])
    verdict = model.decide(score)
    abnormal = None if verdict is None else verdict == "abnormal"
    vmax = model.heatmap_scale(result)
    x = to_model_range(torch.tensor(image)).numpy()
    caption = f"{name}  score {score:.4f}  {verdict or ''}"
    picture = panel(x, result.restored[0], result.maps[0], vmax, caption, map_name=model.map_name)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return {
        "file": name,
        "score": score,
        "abnormal": abnormal,
        "threshold": model.threshold,
        "where": dict(zip(("x0", "y0", "x1", "y1"), top_region(result.maps[0]), strict=True)),
        "panel": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(),
    }


def serve(run: str, host: str = "127.0.0.1", port: int = 8000, allow_remote: bool = False, device: str = "auto"):
    """Load the model and serve the app until interrupted."""
    import uvicorn

    from .inference import Detector

    if not is_loopback(host) and not allow_remote:
        raise DataError(f"--host {host} would serve on the network; {LOOPBACK_HINT}")
    app = create_app(Detector.open(run, device))  # a half-made run or a crafted checkpoint fails here, before a word
    check_port_free(host, port)
    print(f"serving {run} on http://{host}:{port} (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def check_port_free(host: str, port: int) -> None:
    """A DataError naming the port when it cannot be bound, instead of uvicorn's traceback and exit 3."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise DataError(
                f"cannot serve on {host}:{port}: {err.strerror or err}; choose another --port (or stop what uses it)"
            ) from None
