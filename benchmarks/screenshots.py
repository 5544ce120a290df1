"""The README's screenshots of a run: the top of its HTML report and the web app with one image scored.

    python benchmarks/screenshots.py RUN IMAGE [--out docs]

Writes OUT/report.png (`medsagan report RUN`, the first 1400 px of the page) and OUT/serve.png (`medsagan
serve RUN` on a free local port, IMAGE dropped onto the page), both 900 px wide, in headless chromium through
Playwright (`apt-get install chromium`; Playwright ships with the dev extra).
"""

import argparse
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

from medsagan.inference import Detector
from medsagan.serve import create_app
from medsagan.viz.report import build_report

WIDTH = 900
REPORT_HEIGHT = 1400  # down to the first row of heatmaps


def chromium(playwright):
    """Debian's chromium, headless."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise SystemExit("no chromium on this machine: apt-get install chromium")
    return playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])


def report_shot(run: str, out: Path, playwright) -> Path:
    """The top of the run's report."""
    with tempfile.TemporaryDirectory() as folder:
        page_file = build_report(run, out=Path(folder) / "report.html", device="cpu")
        browser = chromium(playwright)
        page = browser.new_page(viewport={"width": WIDTH, "height": REPORT_HEIGHT})
        page.goto(page_file.resolve().as_uri())
        page.screenshot(path=str(out / "report.png"))
        browser.close()
    return out / "report.png"


def serve_shot(run: str, image: Path, out: Path, playwright) -> Path:
    """The web app after `image` was dropped onto it."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(Detector.open(run, "cpu")), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        browser = chromium(playwright)
        page = browser.new_page(viewport={"width": WIDTH, "height": 640})
        page.goto(f"http://127.0.0.1:{port}")
        page.set_input_files("#files", str(image))
        page.wait_for_selector("img.heatmap", timeout=60_000)
        page.screenshot(path=str(out / "serve.png"))
        browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    return out / "serve.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("image", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        print(report_shot(args.run, args.out, playwright))
        print(serve_shot(args.run, args.image, args.out, playwright))


if __name__ == "__main__":
    main()
