"""The demo page in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright.

    apt-get install -y chromium            # once; the test skips, saying so, without it
    .venv/bin/pytest tests/test_browser.py -x -q

Opens the page served by demo/app.py, uploads a photo, waits for the top-5 of
both models, opens the panels, checks that the report's plots load, streams
Chromium's fake camera in live mode, and saves screenshots under
test-artifacts/ (ignored by git).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from demo import local_server, panels, ui
from edge.common import artifacts, run_folder

REPOSITORY = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPOSITORY / "test-artifacts"
# Flags for a sandbox-less container with no GPU and no network beyond localhost.
CHROMIUM_ARGUMENTS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A fake camera (Chromium's test pattern: a moving pie on green) that pages get without a permission prompt.
FAKE_CAMERA_ARGUMENTS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
# Top-5 probabilities shown on the page may sum above 1 by rounding: each dequantized uint8
# probability is at most half a step (1/256) high, so 5 of them at most 5/512.
PROBABILITY_SUM_TOLERANCE = ui.TOP_K / 512 + 1e-6
ANSWER_TIMEOUT_MS = 60_000  # the first request of a fresh server on a busy 2-core machine

pytestmark = [pytest.mark.browser, pytest.mark.slow]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGUMENTS + FAKE_CAMERA_ARGUMENTS
        )
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def page_url(smoke_run):
    with local_server.LocalServer(REPOSITORY / "demo" / "app.py", ["--run", str(smoke_run)], cwd=REPOSITORY) as server:
        yield server.url


def test_upload_shows_the_top5_of_both_models(browser, page_url, smoke_run):
    labels = artifacts.read_labels(smoke_run / "tflite" / "labels.txt")
    photo = next(iter(panels.example_images(labels)), REPOSITORY / "demo" / "examples" / "rocket.jpg")
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    try:
        page.goto(page_url)
        page.locator("#photo input[type=file]").set_input_files(str(photo))
        answer = page.locator("#answer [data-testid='label-output-value']")
        answer.wait_for(timeout=ANSWER_TIMEOUT_MS)
        page.locator("#details", has_text="Latency").wait_for(timeout=ANSWER_TIMEOUT_MS)
        expected_rows = min(ui.TOP_K, len(labels))
        for output in ("#answer", "#reference-answer"):
            # Each row of gr.Label is a <meter> carrying the label and the probability.
            rows = page.locator(f"{output} meter").evaluate_all(
                "meters => meters.map(meter => [meter.getAttribute('aria-label'), meter.value])"
            )
            assert len(rows) == expected_rows and {label for label, _ in rows} <= set(labels), (output, rows)
            assert sum(value for _, value in rows) <= 1 + PROBABILITY_SUM_TOLERANCE, (output, rows)
        details = page.locator("#details").inner_text()
        assert run_folder.INT8_MODEL_FILE in details and "ms" in details
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "demo_top5.png"), full_page=True)
        # "Where it looked" follows the answer: the occlusion map of the served model.
        page.locator("#where img").wait_for(timeout=ANSWER_TIMEOUT_MS)
        page.locator("#where-caption", has_text="lowers").wait_for(timeout=ANSWER_TIMEOUT_MS)
        page.screenshot(path=str(SCREENSHOTS / "demo_where_it_looked.png"))  # docs/images/where-it-looked.png

        # The panels: the model facts, and the report with its plots actually loaded.
        _open_section(page, "About this model")
        _open_section(page, "Full report")
        page.get_by_text("Backbone").wait_for()
        # Wait for the report's own images (the example thumbnails are PNGs served the same way),
        # then for every one of them to have decoded.
        plots = page.locator("img[src*='/gradio_api/file='][src*='plots/']")
        plots.first.wait_for(timeout=ANSWER_TIMEOUT_MS)
        page.wait_for_function(
            "() => [...document.querySelectorAll(\"img[src*='plots/']\")]"
            ".every(image => image.complete && image.naturalWidth > 0)",
            timeout=ANSWER_TIMEOUT_MS,
        )
        loaded = plots.evaluate_all("images => images.map(image => image.complete && image.naturalWidth > 0)")
        assert loaded and all(loaded), loaded
        page.screenshot(path=str(SCREENSHOTS / "demo_panels.png"), full_page=True)
    finally:
        page.close()


def test_a_bad_upload_shows_a_readable_error(browser, page_url, tmp_path):
    page = browser.new_page()
    try:
        page.goto(page_url)
        broken = tmp_path / "broken.png"
        broken.write_bytes((REPOSITORY / "demo" / "examples" / "rocket.jpg").read_bytes()[:2000])
        page.locator("#photo input[type=file]").set_input_files(str(broken))
        # The toast names the visitor's file and the reason, not a server path or a bare "Error".
        page.get_by_text("broken.png: truncated file").first.wait_for(timeout=ANSWER_TIMEOUT_MS)
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "demo_error.png"))
    finally:
        page.close()


def test_chromium_is_debian_s(browser):
    """The executable the suite drives is the system one, not a downloaded Playwright build."""
    assert browser.version and shutil.which("chromium") == str(CHROMIUM)


# The live answer must change this many times (distinct frame numbers on the status line).
LIVE_UPDATES = 3
# Records every frame number the status line shows; true once LIVE_UPDATES distinct ones were seen.
SEEN_FRAMES_SCRIPT = """count => {
    const match = document.querySelector('#live-status')?.innerText.match(/Frame (\\d+):/);
    window.seenFrames = window.seenFrames || new Set();
    if (match) window.seenFrames.add(match[1]);
    return window.seenFrames.size >= count;
}"""


# Tries at opening a closed section before the test gives up, each waiting this long for it to open.
OPEN_ATTEMPTS = 6
OPEN_WAIT_MS = 5_000


def _open_section(page, name: str) -> None:
    """Open the closed gr.Accordion `name`: its header button carries the class `open` once it is.

    A click can land while a busy page is still building itself and be lost (seen once in CI, with a
    first stream running: the section never opened), so the header is clicked again while it is closed.
    """
    header = page.get_by_role("button", name=name)
    for _ in range(OPEN_ATTEMPTS):
        if "open" not in (header.get_attribute("class", timeout=ANSWER_TIMEOUT_MS) or "").split():
            header.click(timeout=ANSWER_TIMEOUT_MS)
        try:
            page.wait_for_function(
                "header => header.classList.contains('open')",
                arg=header.element_handle(timeout=ANSWER_TIMEOUT_MS),
                timeout=OPEN_WAIT_MS,
            )
            return
        except sync_api.TimeoutError:
            continue
    raise AssertionError(
        f"section {name!r} did not open after {OPEN_ATTEMPTS} clicks; "
        f"its header: {header.evaluate('header => header.outerHTML')}"
    )


def _start_live_stream(browser, url: str):
    """A new visitor (own browser context, own Gradio session) streaming the fake camera in Live camera."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(url)
    _open_section(page, "Live camera")
    page.get_by_text("Click to Access Webcam").click(timeout=ANSWER_TIMEOUT_MS)
    page.locator("#live-camera button[aria-label='capture photo']").click()  # "Record": starts the stream
    return page


def _wait_for_live_updates(page, count: int) -> list[int]:
    """Wait until the status line has shown `count` distinct frame numbers (since the page opened); return them."""
    page.wait_for_function(SEEN_FRAMES_SCRIPT, arg=count, polling=50, timeout=ANSWER_TIMEOUT_MS)
    return page.evaluate("() => [...window.seenFrames].map(Number)")


def _live_status(page) -> str:
    """The status line's text alone (the block also holds Gradio's progress timer)."""
    return page.locator("#live-status [data-testid='markdown']").inner_text().strip()


def test_live_mode_streams_the_webcam_and_the_top5_follows(browser, page_url, smoke_run):
    """Chromium's fake camera streams into Live camera; the top-5 and the status line update, also while
    a second visitor streams and while a still photo is classified."""
    labels = artifacts.read_labels(smoke_run / "tflite" / "labels.txt")
    page = _start_live_stream(browser, page_url)
    other_visitor = None
    try:
        seen = _wait_for_live_updates(page, LIVE_UPDATES)
        assert len(seen) >= LIVE_UPDATES and seen == sorted(seen), seen  # each update a newer frame
        rows = page.locator("#live-answer meter").evaluate_all(
            "meters => meters.map(meter => [meter.getAttribute('aria-label'), meter.value])"
        )
        assert 0 < len(rows) <= min(ui.TOP_K, len(labels)) and {label for label, _ in rows} <= set(labels), rows
        assert sum(value for _, value in rows) <= 1 + PROBABILITY_SUM_TOLERANCE, rows
        status = _live_status(page)
        assert " fps, " in status and " ms per frame" in status, status
        print(f"live status, one visitor: {status}")  # the fps seen here, with -s (docs/demo.md)
        SCREENSHOTS.mkdir(exist_ok=True)
        page.locator("#live").screenshot(path=str(SCREENSHOTS / "demo_live.png"))  # docs/images/demo-live.png

        # A second visitor streams at the same time: both keep updating, each with its own count.
        other_visitor = _start_live_stream(browser, page_url)
        assert len(_wait_for_live_updates(other_visitor, LIVE_UPDATES)) >= LIVE_UPDATES
        # A still photo on the first page is answered while both streams run (the streams have their own queue).
        photo = next(iter(panels.example_images(labels)), REPOSITORY / "demo" / "examples" / "rocket.jpg")
        page.locator("#photo input[type=file]").set_input_files(str(photo))
        page.locator("#details", has_text="Latency").wait_for(timeout=ANSWER_TIMEOUT_MS)
        assert len(_wait_for_live_updates(page, len(seen) + LIVE_UPDATES)) >= len(seen) + LIVE_UPDATES
        print(f"live status, two visitors: {_live_status(page)} | {_live_status(other_visitor)}")
        page.locator("#live-camera button", has_text="Stop").click()  # ends the stream, freeing its worker
    finally:
        page.close()
        if other_visitor is not None:
            other_visitor.close()
