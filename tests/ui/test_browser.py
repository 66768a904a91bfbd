"""`vidyn ui` in a real headless browser (Debian's chromium + chromium-driver, driven by Selenium).

Starts the UI on a free local port over two tiny predictors of different sizes (one reached through a
symbolic link), uploads a clip the test writes, runs Predict, picks a sample clip, uploads a text file
named .mp4, records every request the page makes and saves screenshots (folder printed; VIDYN_UI_SHOTS
sets it, .ci/run keeps them under artifacts/ui).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vidyn import api
from vidyn.data.video_io import write_video

os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never fetch a driver or a browser
webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (the test extra)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="apt-get install chromium chromium-driver (.ci/run does)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _moving_squares(path: Path, frames: int = 40) -> Path:
    """A clip with motion worth predicting: two squares crossing a dark 96x72 frame at 10 fps."""
    video = np.full((frames, 72, 96, 3), 30, np.uint8)
    for t in range(frames):
        video[t, 20:40, 5 + 2 * t : 21 + 2 * t] = (240, 180, 40)
        video[t, 45:60, 80 - t : 95 - t] = (60, 160, 240)
    write_video(path, video, fps=10)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two predictors trained for 2 steps: 16x16 gray in the folder, 24x24 colour through a symlink."""
    from tiny_configs import tiny_prediction_config

    root, elsewhere = tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("elsewhere")
    gray = tiny_prediction_config()
    colour = tiny_prediction_config(in_channels=3, image_size=24)
    colour["data"]["args"].update(size=24, channels=3)
    for cfg, where in ((gray, root / "gray16"), (colour, elsewhere / "colour24")):
        cfg["trainer"]["max_steps"] = 2
        api.train(cfg, run_dir=where, evaluate_after=False)
    (root / "colour24").symlink_to(elsewhere / "colour24", target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`vidyn ui` on a free port: (its URL, its log file); stopped after the module."""
    port, log = _free_port(), tmp_path_factory.mktemp("server") / "server.log"
    cmd = [sys.executable, "-m", "vidyn", "ui", "--models", str(models), "--port", str(port)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.3)
        else:
            pytest.fail(f"vidyn ui did not start in 90 s:\n{log.read_text()}")
        yield f"http://127.0.0.1:{port}/", log
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every network request
    driver = webdriver.Chrome(service=webdriver.ChromeService(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots() -> Path:
    folder = Path(os.environ.get("VIDYN_UI_SHOTS") or Path.cwd() / "artifacts" / "ui").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {folder}")
    return folder


def _text(driver: object, element_id: str) -> str:
    found = driver.find_elements(By.ID, element_id)
    return found[0].text if found else ""


def _wait_text(driver: object, element_id: str, needle: str, timeout: float = 60) -> str:
    WebDriverWait(driver, timeout).until(lambda d: needle in _text(d, element_id))
    return _text(driver, element_id)


def _upload(driver: object, path: Path) -> None:
    clear = driver.find_elements(By.CSS_SELECTOR, "#predict-video button[aria-label='Clear']")
    if clear:  # a clip is loaded: clear it so the file input comes back
        clear[0].click()
    WebDriverWait(driver, 20).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#predict-video input[type=file]")
    )
    driver.find_element(By.CSS_SELECTOR, "#predict-video input[type=file]").send_keys(str(path))


def _predict(driver: object) -> float:
    """Click Predict; seconds until the grid and the runtime table of both models are in the page."""
    old = driver.find_elements(By.CSS_SELECTOR, "#predict-grid img")
    before = old[0].get_attribute("src") if old else None
    start = time.perf_counter()
    driver.find_element(By.ID, "predict-run").click()
    WebDriverWait(driver, 60).until(
        lambda d: [
            i
            for i in d.find_elements(By.CSS_SELECTOR, "#predict-grid img")
            if i.get_attribute("src") != before
        ]
    )
    seconds = time.perf_counter() - start
    table = _wait_text(driver, "predict-runtime", "(gray16)", timeout=20)
    assert "convlstm_tiny (gray16)" in table and "convlstm_tiny (colour24)" in table, table
    assert "16x16 gray" in table and "24x24 colour" in table
    return seconds


def _requests(driver: object) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_predict_samples_and_errors_in_a_real_browser(server, browser, shots: Path, tmp_path: Path) -> None:
    url, log = server
    browser.get(url)
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.ID, "predict-run"))
    # the symlinked model folder is found, and both models are offered with their sizes, both ticked
    assert "2 exported model(s)" in _text(browser, "summary")
    boxes = browser.find_elements(By.CSS_SELECTOR, "#predict-models input[type=checkbox]")
    assert len(boxes) == 2 and all(b.is_selected() for b in boxes)

    _upload(browser, _moving_squares(tmp_path / "moving_squares.mp4"))
    _wait_text(browser, "predict-status", "uploaded moving_squares.mp4", timeout=30)
    seconds = _predict(browser)
    assert "Total wall time" in _text(browser, "predict-status")
    print(f"click Predict -> grid and table: {seconds:.2f} s")
    src = browser.find_element(By.CSS_SELECTOR, "#predict-grid img").get_attribute("src")
    with urllib.request.urlopen(src, timeout=20) as grid:  # the grid itself, from the page's own server
        (shots / "predict_grid.gif").write_bytes(grid.read())
    time.sleep(2.0)  # the GIF plays 4 context frames at 4 fps first: show the predictions
    browser.save_screenshot(str(shots / "predict_upload.png"))

    camera = os.environ.get("VIDYN_UI_CLIP")  # a real camera clip to try as well (e.g. an H.264 MP4)
    if camera:
        _upload(browser, Path(camera))
        _wait_text(browser, "predict-status", f"uploaded {Path(camera).name}", timeout=60)
        print(f"{Path(camera).name}: click Predict -> grid and table: {_predict(browser):.2f} s")
        browser.save_screenshot(str(shots / "predict_camera.png"))

    browser.find_element(By.ID, "predict-use-sample").click()
    _wait_text(browser, "predict-status", "sample clip: shapes_seed0_128px.mp4", timeout=30)
    _predict(browser)
    time.sleep(2.0)
    browser.save_screenshot(str(shots / "predict_sample.png"))

    text = tmp_path / "not_a_video.mp4"
    text.write_text("this is a text file, not a video\n" * 20)
    _upload(browser, text)
    message = _wait_text(browser, "predict-status", "not_a_video.mp4 is not a video", timeout=30)
    assert "/tmp" not in message and "gradio" not in message.lower(), message
    browser.find_element(By.ID, "predict-run").click()
    _wait_text(browser, "predict-status", "not a video", timeout=30)
    browser.save_screenshot(str(shots / "predict_not_a_video.png"))

    urls = _requests(browser)
    assert urls and all(u.startswith(url) or u.startswith(("data:", "blob:")) for u in urls), [
        u for u in urls if not u.startswith(url)
    ]
    server_log = log.read_text()
    assert "user error: not_a_video.mp4 is not a video" in server_log
    assert "Traceback" not in server_log, server_log
