"""``fer-func demo``: the page, served by the real command, driven in a real headless Chromium.

A person's path: start ``python runner.py demo MODEL --port P`` on 127.0.0.1, open the page, upload a photo
with three real FER2013 faces (conftest.py), read what comes back: the boxed photo, one chart per face
with its 7 probabilities, and "no face found" for a photo without one. Every number on the page is
checked against ``predict`` on the same file. The browser is Debian's chromium (scripts/install_browser.sh)
driven by playwright, which downloads nothing when given its path; every request the page makes to an
address other than 127.0.0.1 is blocked and fails the test.

The page can be slow to come up on a loaded machine (the server imports torch and gradio), hence the
timeouts of many minutes. Set FER_FUNC_DEMO_SCREENSHOT=PATH to keep a screenshot of the page after a prediction.
"""
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from conftest import PLACES, needs_fer
from fer_func import cli
from fer_func.use import annotate, demo, load_model, predict_faces

pytest.importorskip("cv2", reason="face detection needs opencv-python-headless (pip install -e '.[faces]')")
REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("FER_FUNC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# Each well under a minute on an idle 2-core machine (the whole file: about 60 s). Under a training run at nice 0
# and this test at nice 19, starting the server alone (importing torch and gradio) took over 300 s.
START_S = 1200   # the server's first page
TIMEOUT_S = 300  # page load, one prediction


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_fer
def test_analyse_gives_what_predict_gives(photos, model_file):
    # The page's one function, without a browser: the faces predict lists, the image annotate draws.
    model = load_model(model_file)
    image, status, found = demo.analyse(model, str(photos / "group.png"))
    want = predict_faces(model_file, [str(photos / "group.png")])[1][0]
    assert status == f"{len(PLACES)} faces found" and found == want["faces"]
    assert np.array_equal(np.asarray(image), np.asarray(annotate.annotated(want, numbered=True)))
    image, status, found = demo.analyse(model, str(photos / "empty.png"))
    assert status == demo.NO_FACE and found == [] and image.size == (640, 480)
    assert demo.analyse(model, None) == (None, "", [])


def test_a_missing_model_is_one_line_before_anything_is_served(tmp_path, capsys):
    assert cli.main(["demo", str(tmp_path / "nope.pt"), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model file") and "\n" not in err and "export" in err


def test_a_taken_port_is_one_line(model_file, capsys):
    pytest.importorskip("gradio", reason="the demo page needs gradio (pip install -e '.[demo]')")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["demo", str(model_file), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: cannot serve on 127.0.0.1:{port}") and "--port" in err


@pytest.fixture(scope="module")
def server(model_file, tmp_path_factory):
    """``python runner.py demo MODEL --port P`` in a subprocess, as a person starts it; yields its URL."""
    pytest.importorskip("gradio", reason="the demo page needs gradio (pip install -e '.[demo]')")
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "log.txt"
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp_path_factory.mktemp("uploads")),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "runner.py", "demo", str(model_file), "--port", str(port)],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_S
        while True:
            assert proc.poll() is None, f"the demo server exited ({proc.returncode}):\n{log.read_text()}"
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no page at {url} after {START_S} s:\n{log.read_text()}"
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (pip install -e '.[dev]')")
    if CHROMIUM is None or not os.access(CHROMIUM, os.X_OK):
        pytest.skip("no chromium to drive: bash scripts/install_browser.sh (Debian's chromium), "
                    "or set FER_FUNC_CHROMIUM to a Chromium or Chrome binary")
    with playwright.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


def charts(page) -> list[dict]:
    """Each face's chart as the page shows it: its title, heading and {class: probability} (the bars' values)."""
    return page.eval_on_selector_all(".face-probs", """els => els.map(el => ({
        title: el.querySelector('[data-testid="block-label"]')?.textContent.trim(),
        heading: el.querySelector('[data-testid="label-output-value"]')?.textContent.trim(),
        probs: Object.fromEntries([...el.querySelectorAll('meter')].map(m => [m.getAttribute('aria-label'), m.value])),
    }))""")


@needs_fer  # browser before server: without a browser it skips before a server is started
def test_the_page_boxes_each_face_and_charts_its_probabilities(browser, server, photos, model_file, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(TIMEOUT_S * 1000)
    outside = []

    def only_loopback(route):
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    page.goto(server)
    photo_input = page.locator("#photo input[type=file]")
    photo_input.set_input_files(photos / "group.png")
    page.wait_for_function(f"document.querySelectorAll('.face-probs').length === {len(PLACES)}")
    page.wait_for_function("document.querySelectorAll('.face-probs meter').length === 7 * "
                           f"{len(PLACES)}")  # every bar drawn

    want = predict_faces(model_file, [str(photos / "group.png")])[1][0]
    assert page.locator("#status").inner_text().strip() == f"{len(PLACES)} faces found"
    shown = charts(page)
    assert [c["title"] for c in shown] == [demo.chart_title(i, f) for i, f in enumerate(want["faces"], 1)]
    for chart, face in zip(shown, want["faces"]):
        assert chart["heading"] == face["label"]
        assert chart["probs"].keys() == face["probs"].keys()
        assert chart["probs"] == pytest.approx(face["probs"], abs=1e-12)  # JSON carries the float64 as is

    src = page.locator("#boxed img").get_attribute("src")
    boxed = Image.open(io.BytesIO(page.request.get(src).body()))
    assert np.array_equal(np.asarray(boxed.convert("RGB")), np.asarray(annotate.annotated(want, numbered=True)))
    page.screenshot(path=os.environ.get("FER_FUNC_DEMO_SCREENSHOT") or tmp_path / "demo.png", full_page=True)

    # A photo without a face: the message, and the charts of the last photo are gone.
    page.locator("#photo button[aria-label='Remove Image']").click()
    page.wait_for_function("document.querySelectorAll('.face-probs').length === 0")
    photo_input.set_input_files(photos / "empty.png")
    page.wait_for_function("document.querySelector('#status').innerText.includes('no face found')")
    assert page.locator(".face-probs").count() == 0
    assert outside == [], f"the page asked for addresses other than 127.0.0.1: {outside}"
    page.close()
