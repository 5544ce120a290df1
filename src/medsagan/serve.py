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

from .data.readers import MAX_PIXELS, decode_bytes, sniff
from .errors import DataError, MedsaganError
from .viz.heatmaps import panel

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
    """The FastAPI app around a loaded model (predict.open_model: a run or an ONNX file)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title="medsagan", docs_url=None, redoc_url=None)
    limit = int(max_upload_mb * 1024 * 1024)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.replace("{{LIMIT_MB}}", f"{max_upload_mb:g}").replace("{{MAX_PIXELS}}", f"{MAX_PIXELS:,}")

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
        image = decode_bytes(data, name, model.image_size, model.channels)
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
    threshold = model.threshold
    abnormal = None if threshold is None else bool(score >= threshold)
    vmax = model.heatmap_vmax or float(np.quantile(result.maps, 0.999))
    verdict = "" if abnormal is None else ("abnormal" if abnormal else "normal")
    x = image.astype(np.float32) / 127.5 - 1
    picture = panel(x, result.restored[0], result.maps[0], vmax, f"{name}  score {score:.4f}  {verdict}")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return {
        "file": name,
        "score": score,
        "abnormal": abnormal,
        "threshold": threshold,
        "panel": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(),
    }


def serve(run: str, host: str = "127.0.0.1", port: int = 8000, allow_remote: bool = False, device: str = "auto"):
    """Load the model and serve the app until interrupted."""
    import uvicorn

    from .predict import open_model

    if not is_loopback(host) and not allow_remote:
        raise DataError(f"--host {host} would serve on the network; {LOOPBACK_HINT}")
    app = create_app(open_model(run, device))  # a half-made run or a crafted checkpoint fails here, before a word
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


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>medsagan</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 900px; color: #222; }
#drop { border: 2px dashed #888; border-radius: 8px; padding: 2em; text-align: center; }
#drop.over { background: #eef; }
.result { margin: 1em 0; padding: 0.5em; border: 1px solid #ddd; border-radius: 6px; }
.abnormal { color: #b00; font-weight: bold; } .normal { color: #070; font-weight: bold; }
.error { color: #b00; }
</style></head><body>
<h1>medsagan</h1>
<p>Drop chest X-rays or fundus photos (PNG, JPEG, TIFF, BMP or DICOM, up to {{LIMIT_MB}} MB and
{{MAX_PIXELS}} pixels each). They are scored in memory and not stored.</p>
<div id="drop">Drop files here, or <input type="file" id="files" multiple></div>
<div id="results"></div>
<script>
const results = document.getElementById("results");
async function send(file) {
  const box = document.createElement("div");
  box.className = "result";
  box.textContent = file.name + ": scoring...";
  results.prepend(box);
  const form = new FormData();
  form.append("file", file);
  try {
    const response = await fetch("predict", {method: "POST", body: form});
    const answer = await response.json();
    box.textContent = "";
    if (!response.ok) {
      const p = document.createElement("p");
      p.className = "error";
      p.textContent = answer.error;
      box.append(p);
      return;
    }
    const line = document.createElement("p");
    const verdict = answer.abnormal === null ? "no threshold" : (answer.abnormal ? "abnormal" : "normal");
    line.innerHTML = "<b></b>: score <span class=score></span>, <span></span>";
    line.children[0].textContent = answer.file;
    line.children[1].textContent = answer.score.toFixed(4);
    line.children[2].textContent = verdict;
    line.children[2].className = answer.abnormal ? "abnormal" : "normal";
    const img = document.createElement("img");
    img.src = answer.panel;
    img.alt = "heatmap of " + answer.file;
    img.className = "heatmap";
    box.append(line, img);
  } catch (err) {
    box.textContent = file.name + ": " + err;
  }
}
document.getElementById("files").addEventListener("change", e => [...e.target.files].forEach(send));
const drop = document.getElementById("drop");
drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => {
  e.preventDefault();
  drop.classList.remove("over");
  [...e.dataTransfer.files].forEach(send);
});
</script>
</body></html>
"""
