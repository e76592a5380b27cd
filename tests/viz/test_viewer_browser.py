"""The viewer.html of a synth4d `l4p run --viewer` in a real browser: headless Chromium (Debian's chromium
and chromium-driver, WebGL through SwiftShader) driven by selenium.

Checks: the page logs no error, the WebGL canvas draws more than the background, moving the slider
changes the picture, the point-cloud toggle changes it, play advances the frames; a screenshot is saved
under the test's tmp_path. Without chromium the test is skipped, unless L4P_REQUIRE_BROWSER is set (CI):
then it fails. The browser helpers below are also used by scripts/viewer_screenshot.py.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = os.environ.get("L4P_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("L4P_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # root in containers
    "--disable-dev-shm-usage",
    "--use-angle=swiftshader",  # WebGL on the CPU: no GPU in CI
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)
BACKGROUND = (0x15, 0x17, 0x1C)  # the viewer's clear colour (web/viewer/src/viewer.js)


def browser_missing() -> str | None:
    """Why the browser test cannot run here (None when it can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).is_file() or shutil.which(path)):
            return f"{path} is missing (apt-get install chromium chromium-driver; scripts/setup.sh does it as root)"
    return None


def start_browser(width: int = 1280, height: int = 720):
    """A headless Chromium with WebGL (SwiftShader) whose console messages are logged (goog:loggingPrefs)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(90)
    return driver


def load_viewer(driver, html: Path) -> None:
    """Open viewer.html from file:// and wait until its first frame is drawn (window.l4pViewer.ready)."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(Path(html).resolve().as_uri())
    state = WebDriverWait(driver, 90, poll_frequency=0.2).until(
        lambda d: d.execute_script(
            "const v = window.l4pViewer; return v && (v.ready || v.error) ? {ready: v.ready, error: v.error} : null"
        )
    )
    assert state["ready"], f"the viewer failed: {state['error']}"


def settled(driver, script: str = "") -> None:
    """Run `script` (may use the hook `v`), then wait until the viewer has rendered with every frame
    image decoded."""
    driver.execute_async_script(
        f"const done = arguments[arguments.length - 1]; const v = window.l4pViewer; {script}; "
        "v.settled().then(() => done(true));"
    )


def canvas_pixels(driver) -> np.ndarray:
    """(H, W, 3) uint8 RGB of the WebGL canvas (the renderer keeps its drawing buffer)."""
    import cv2

    url = driver.execute_script("return document.getElementById('l4p-canvas').toDataURL('image/png')")
    data = np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]


def page_errors(driver) -> list[str]:
    """Errors the page logged since the last call: console errors and uncaught exceptions (level SEVERE)
    and WebGL errors (GL_INVALID_..., which Chromium logs as warnings)."""
    return [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" or "GL_INVALID" in e["message"]
    ]


def drawn_fraction(pixels: np.ndarray) -> float:
    """Fraction of the pixels that are not the background colour."""
    return float((np.abs(pixels.astype(int) - BACKGROUND).sum(-1) > 24).mean())


# -- the test --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    why = browser_missing()
    if why:
        if os.environ.get("L4P_REQUIRE_BROWSER"):
            pytest.fail(f"L4P_REQUIRE_BROWSER is set but the browser test cannot run: {why}")
        pytest.skip(why)
    driver = start_browser()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def synth_viewer(tmp_path_factory) -> Path:
    """viewer.html of `l4p run --viewer` (the shipped model) on a 12-frame 48x64 synth4d clip."""
    from einops import rearrange

    from l4p_framework.cli.main import main
    from l4p_framework.data.synth4d import Synth4DConfig, generate_clip
    from l4p_framework.data.video import write_video

    tmp = tmp_path_factory.mktemp("viewer")
    clip = generate_clip(3, Synth4DConfig(num_frames=12, height=48, width=64))
    frames = (rearrange(clip["video"], "c t h w -> t h w c").clamp(0, 1) * 255).round().byte().numpy()
    video = write_video(tmp / "synth.mp4", frames, fps=10)
    assert main(["run", str(video), "--out", str(tmp / "out"), "--no-ply", "--no-preview", "--viewer"]) == 0
    return tmp / "out" / "synth" / "viewer.html"


@pytest.mark.browser
def test_the_viewer_draws_the_run_and_its_controls_change_the_picture(browser, synth_viewer, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    load_viewer(browser, synth_viewer)
    header = browser.execute_script("return window.l4pViewer.header")
    assert header["numFrames"] == 12 and {"points", "tracks"} <= set(header) and header["points"]["count"] > 0
    first = canvas_pixels(browser)
    assert first.shape[0] > 100 and drawn_fraction(first) > 0.05, "the WebGL canvas stays (almost) blank"
    assert browser.execute_script("return document.getElementById('l4p-frame').naturalWidth") > 0

    slider = browser.find_element(By.ID, "l4p-slider")
    slider.send_keys(Keys.END)  # the keyboard moves a range input like a user's drag, firing `input`
    settled(browser)
    assert browser.execute_script("return window.l4pViewer.frame()") == 11
    last = canvas_pixels(browser)
    assert np.abs(last.astype(int) - first).mean() > 0.5, "moving the slider did not change the picture"

    browser.find_element(By.ID, "l4p-toggle-points").click()
    settled(browser)
    no_points = canvas_pixels(browser)
    assert not browser.find_element(By.ID, "l4p-toggle-points").is_selected()
    assert drawn_fraction(no_points) < drawn_fraction(last) - 0.02, "the point-cloud toggle changed nothing"
    browser.find_element(By.ID, "l4p-toggle-points").click()
    browser.find_element(By.ID, "l4p-toggle-motion").click()
    settled(browser)
    assert np.abs(canvas_pixels(browser).astype(int) - last).mean() > 0.5, "motion colouring changed nothing"

    settled(browser, "v.setFrame(0)")
    browser.find_element(By.ID, "l4p-play").click()
    for _ in range(50):
        if browser.execute_script("return window.l4pViewer.frame()") > 0:
            break
        browser.execute_async_script("setTimeout(arguments[arguments.length - 1], 100)")
    browser.find_element(By.ID, "l4p-play").click()
    assert browser.execute_script("return window.l4pViewer.frame()") > 0, "play did not advance the frames"

    browser.save_screenshot(str(tmp_path / "viewer.png"))
    assert (tmp_path / "viewer.png").stat().st_size > 10_000
    errors = page_errors(browser)
    assert not errors, f"the viewer page logged errors: {errors}"


@pytest.mark.browser
def test_the_checks_catch_a_blank_canvas_and_a_page_error(browser, tmp_path):
    """What the test above relies on: a canvas cleared to the background counts as blank, and an error
    of the page (console.error, an uncaught exception) reaches page_errors."""
    page = tmp_path / "blank.html"
    page.write_text(
        "<!doctype html><canvas id='l4p-canvas' width='96' height='64'></canvas><script>"
        "const gl = document.getElementById('l4p-canvas').getContext('webgl2', {preserveDrawingBuffer: true});"
        f"gl.clearColor({BACKGROUND[0] / 255}, {BACKGROUND[1] / 255}, {BACKGROUND[2] / 255}, 1);"
        "gl.clear(gl.COLOR_BUFFER_BIT); window.l4pViewer = {ready: false, error: 'no data'};"
        "console.error('l4p test: a logged error'); undefinedFunction();</script>"
    )
    with pytest.raises(AssertionError, match="no data"):
        load_viewer(browser, page)
    assert drawn_fraction(canvas_pixels(browser)) == 0.0
    errors = page_errors(browser)
    assert any("a logged error" in e for e in errors) and any("undefinedFunction" in e for e in errors)
