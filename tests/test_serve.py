"""edge/serve.py: the camera's live view over HTTP (`python edge/camera.py --serve`).

    .venv/bin/pytest tests/test_serve.py -x -q

Most tests run `camera.run()` in a thread on a folder, with a fake classifier
(tests/camera_support.py) and the server on 127.0.0.1 port 0 (the system picks
a free port, which the test reads from the server before the loop starts), and
talk HTTP to it; one runs the script end to end on the smoke run's int8 model
(marked slow), one opens the page in Chromium (marked browser).
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from camera_support import (
    FOLDER_IMAGES,
    REPOSITORY,
    SCRIPT,
    SUBPROCESS_TIMEOUT,
    FakeCamera,
    FakeClassifier,
    assert_stopped_cleanly,
    run_script,
)
from PIL import Image

from edge import camera, serve, stopping
from edge.common import errors

#: Seconds one HTTP exchange or a serving run may take here before the test fails (the CPUs are shared).
HTTP_TIMEOUT = 60
#: JPEG parts the stream tests read from /stream.mjpg.
STREAM_PARTS = 3
#: The start of every JPEG file (the SOI marker).
JPEG_START = b"\xff\xd8"
#: Frames per second of the in-process serving runs: the long folder then lasts 12 s, far longer than a test needs
#: (each test stops the run itself once it has seen what it came for).
SERVING_FPS = 5


class Serving:
    """`camera.run` serving on a free loopback port in a thread (see `serving_camera`)."""

    def __init__(
        self,
        server: serve.LiveServer,
        stop: stopping.StopRequest,
        thread: threading.Thread,
        output: io.StringIO,
        result: dict,
    ):
        self.server, self.port, self.stop, self.thread, self.output, self.result = (
            server,
            server.port,
            stop,
            thread,
            output,
            result,
        )

    def printed_records(self) -> list[dict]:
        return [json.loads(line) for line in self.output.getvalue().splitlines()]

    def finish(self) -> dict:
        """Stop the run (as SIGTERM would) and return its summary."""
        self.stop.request(signal.SIGTERM)
        self.thread.join(HTTP_TIMEOUT)
        assert not self.thread.is_alive(), "the camera loop did not stop"
        return self.result["summary"]


@contextlib.contextmanager
def serving_camera(source: Path, **changes):
    """`camera.run(--json --serve 127.0.0.1:0)` on `source` with a fake classifier, in a thread; stopped on exit.

    The server is bound here, so the test knows its port (the system's choice) before the loop starts.
    """
    options = camera.CameraConfig(source=str(source), json=True, serve="127.0.0.1:0", **changes)
    server = serve.LiveServer("127.0.0.1", 0)
    stop, output, result = stopping.StopRequest(), io.StringIO(), {}

    def work() -> None:
        result["summary"] = camera.run(options, classifier=FakeClassifier(), stream=output, stop=stop, server=server)

    thread = threading.Thread(target=work, name="camera-under-test")
    thread.start()
    serving = Serving(server, stop, thread, output, result)
    try:
        yield serving
    finally:
        if thread.is_alive():
            serving.finish()


def http_get(port: int, path: str) -> tuple[int, str, bytes]:
    """(status, Content-Type, body) of GET `path`, sent exactly as written (no normalising of `..`)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def latest_record(port: int, after: int = 0) -> dict:
    """/predictions.json, polled until its frame number is above `after` (bounded)."""
    deadline = time.monotonic() + HTTP_TIMEOUT
    while True:
        status, content_type, body = http_get(port, "/predictions.json")
        assert status == 200 and content_type == "application/json", (status, body)
        record = json.loads(body)
        if record["frame"] > after or time.monotonic() > deadline:
            return record
        time.sleep(0.05)


def read_parts(stream: io.BufferedReader, boundary: str, count: int) -> list[bytes]:
    """The bodies of the next `count` parts of a multipart/x-mixed-replace stream."""
    parts = []
    while len(parts) < count:
        line = stream.readline()
        assert line, "the stream ended early"
        if line.strip() != f"--{boundary}".encode():
            continue  # The CRLF that ends the previous part.
        headers = {}
        while line := stream.readline().strip():
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        assert headers["content-type"] == "image/jpeg"
        parts.append(stream.read(int(headers["content-length"])))
    return parts


def open_stream(port: int) -> tuple[socket.socket, io.BufferedReader, str]:
    """GET /stream.mjpg on a plain socket (so a test can reset it); returns it, its reader and the boundary."""
    client = socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT)
    client.sendall(b"GET /stream.mjpg HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    reader = client.makefile("rb")
    status = reader.readline()
    assert status.split()[1] == b"200", status
    headers = {}
    while line := reader.readline().strip():
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    content_type = headers["content-type"]
    assert content_type.startswith("multipart/x-mixed-replace; boundary="), content_type
    return client, reader, content_type.partition("boundary=")[2]


def assert_refused(port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT).close()


@pytest.mark.parametrize(
    "text, address",
    [
        ("8000", ("127.0.0.1", 8000)),
        ("0.0.0.0:8000", ("0.0.0.0", 8000)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:8080", ("::1", 8080)),
        (" 8000 ", ("127.0.0.1", 8000)),
    ],
)
def test_serve_addresses(text, address):
    assert serve.parse_address(text) == address


def test_a_frame_is_encoded_once_and_only_when_watched():
    latest = serve.LatestFrame()
    renders = []

    def render() -> Image.Image:
        renders.append(1)
        return Image.new("RGB", (16, 12), (200, 30, 30))

    latest.publish(1, {"frame": 1}, render)
    latest.publish(2, {"frame": 2}, render)
    assert renders == [] and latest.encoded_frames == 0  # Nobody asked: nothing drawn, nothing encoded.
    frame = latest.wait_newer(0, timeout=0)
    assert frame.number == 2 and frame.record == {"frame": 2}  # The newest; frame 1 was skipped.
    number, jpeg = latest.jpeg(frame)
    assert (number, jpeg) == latest.jpeg(frame)  # A second client gets the cached bytes.
    assert number == 2 and jpeg.startswith(JPEG_START)
    assert len(renders) == 1 and latest.encoded_frames == 1
    assert latest.wait_newer(2, timeout=0) is None  # Nothing newer yet.
    latest.close()
    assert latest.wait_newer(0, timeout=0) is None  # Closed: waiting clients end.


def test_a_port_in_use_is_one_line_and_exit_2(image_folder):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(serve.ServeError, match="the port is in use"):
            serve.LiveServer("127.0.0.1", port)
        # No --model: the port is bound before the model loads, so a taken port fails first.
        result = run_script("--source", str(image_folder), "--serve", f"127.0.0.1:{port}")
    assert result.returncode == errors.EXIT_USAGE
    assert result.stderr.strip().splitlines() == [
        f"camera: error: cannot serve on 127.0.0.1:{port}: the port is in use (another camera or server?); "
        "pick another PORT"
    ]


def test_predictions_json_is_the_json_record_and_changes(long_image_folder):
    with serving_camera(long_image_folder, fps_limit=SERVING_FPS) as serving:
        first = latest_record(serving.port)
        second = latest_record(serving.port, after=first["frame"])
        assert second["frame"] > first["frame"]
        assert set(first) == {"frame", "source", "predictions", "latency_ms", "inference_ms", "fps"}
        assert first["source"] == f"folder:{long_image_folder}"
        assert [prediction["label"] for prediction in first["predictions"]] == ["bicycle", "dolphin", "castle"]
        summary = serving.finish()
        printed = serving.printed_records()
    # The very object --json printed for that frame.
    assert printed[first["frame"] - 1] == first and printed[second["frame"] - 1] == second
    assert summary["stopped"] == "SIGTERM" and summary["frames"] == len(printed)
    assert serving.server.latest.encoded_frames == 0  # No one watched the stream: no frame was encoded.


def test_the_page_and_unknown_paths(long_image_folder):
    with serving_camera(long_image_folder, fps_limit=SERVING_FPS) as serving:
        status, content_type, body = http_get(serving.port, "/")
        assert status == 200 and content_type == "text/html; charset=utf-8"
        assert b'<img src="/stream.mjpg"' in body and b"/predictions.json" in body
        for path in (
            "/favicon.ico",
            "/../etc/passwd",
            "/index.html",
            "/stream.mjpg/x",
            "/predictions.json/",
            "//etc/passwd",
            "/edge/camera.py",
            "/%2e%2e/README.md",
        ):
            status, _, body = http_get(serving.port, path)
            assert status == 404, path
            assert b"import" not in body and b"passwd" not in body
        assert http_get(serving.port, "/predictions.json?cache=1")[0] == 200  # A query string is ignored.


def test_the_stream_delivers_jpeg_parts(long_image_folder):
    with serving_camera(long_image_folder, fps_limit=SERVING_FPS) as serving:
        client, reader, boundary = open_stream(serving.port)
        try:
            parts = read_parts(reader, boundary, STREAM_PARTS)
        finally:
            reader.close()
            client.close()
        summary = serving.finish()
    assert len(parts) == STREAM_PARTS
    for part in parts:
        assert part.startswith(JPEG_START) and part.endswith(b"\xff\xd9")
        with Image.open(io.BytesIO(part)) as image:
            assert image.format == "JPEG" and image.size == (50, 40)  # The annotated frame, at the source's size.
    assert len(set(parts)) == STREAM_PARTS  # Three different frames.
    assert serving.server.latest.encoded_frames <= summary["frames"]  # At most once per frame.


def reset(client: socket.socket) -> None:
    """Close `client` with a TCP reset (SO_LINGER 0), as a crashed browser or a dropped Wi-Fi link can."""
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def test_a_client_leaving_mid_stream_or_stalling_leaves_the_loop_running(long_image_folder, capfd):
    with serving_camera(long_image_folder, fps_limit=SERVING_FPS) as serving:
        # One client resets before it even sends its request.
        reset(socket.create_connection(("127.0.0.1", serving.port), timeout=HTTP_TIMEOUT))
        # One client stops reading altogether, and stays connected until the end.
        stalled = socket.create_connection(("127.0.0.1", serving.port), timeout=HTTP_TIMEOUT)
        stalled.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
        # Another reads one part, then vanishes with a reset.
        client, reader, boundary = open_stream(serving.port)
        read_parts(reader, boundary, 1)
        reader.close()
        reset(client)
        left_at = latest_record(serving.port)["frame"]
        later = latest_record(serving.port, after=left_at + 2)
        assert later["frame"] > left_at + 2, "the loop stopped classifying after a client left"
        assert serving.thread.is_alive()
        summary = serving.finish()
        stalled.close()
    assert summary["stopped"] == "SIGTERM" and summary["frames"] >= later["frame"]
    assert summary["exit_code"] == camera.EXIT_TERMINATED
    assert "Traceback" not in capfd.readouterr().err  # Clients failing are not the camera's errors.


def test_stopping_the_camera_closes_the_server(image_folder):
    # The folder ends by itself (after at least a second at this rate), with a stream client still connected.
    with serving_camera(image_folder, fps_limit=SERVING_FPS) as serving:
        client, reader, boundary = open_stream(serving.port)
        read_parts(reader, boundary, 1)
        serving.thread.join(HTTP_TIMEOUT)
        assert not serving.thread.is_alive()
        summary = serving.result["summary"]
        reader.read()  # Returns: the server closed the stream's connection (a hang would time out and fail).
        reader.close()
        client.close()
    assert summary["stopped"] == "end of source" and summary["frames"] == FOLDER_IMAGES
    assert_refused(serving.port)
    assert not [thread for thread in threading.enumerate() if thread.name == "live-view-server"]


def test_a_lost_camera_closes_the_server_too():
    server = serve.LiveServer("127.0.0.1", 0)
    summary = camera.run(
        camera.CameraConfig(serve="127.0.0.1:0"),
        source=FakeCamera(good_frames=3, failure=OSError),
        classifier=FakeClassifier(),
        server=server,
    )
    assert summary["stopped"] == "camera lost" and summary["exit_code"] == camera.EXIT_FAILURE
    assert 1 <= summary["frames"] <= 3
    assert_refused(server.port)


@pytest.mark.slow
def test_serve_from_the_script(tiny_model, long_image_folder, tmp_path):
    # The whole command, with the int8 model: serves on the port the system chose, then Ctrl-C closes it.
    stdout_path, stderr_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                "--model",
                str(tiny_model),
                "--source",
                str(long_image_folder),
                "--headless",
                "--fps-limit",
                "5",
                "--serve",
                "127.0.0.1:0",
            ],
            cwd=REPOSITORY,
            stdout=stdout,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT
        pattern = re.compile(
            r"^camera: serving http://127\.0\.0\.1:(\d+)/ \(MJPEG at /stream\.mjpg, "
            r"JSON at /predictions\.json\)$",
            re.MULTILINE,
        )
        while not (found := pattern.search(stderr_path.read_text())) and process.poll() is None:
            assert time.monotonic() < deadline, stderr_path.read_text()
            time.sleep(0.05)
        assert found, stderr_path.read_text()
        port = int(found.group(1))
        first = latest_record(port)
        second = latest_record(port, after=first["frame"])
        assert second["frame"] > first["frame"] and second["source"] == f"folder:{long_image_folder}"
        client, reader, boundary = open_stream(port)
        try:
            assert all(part.startswith(JPEG_START) for part in read_parts(reader, boundary, STREAM_PARTS))
        finally:
            reader.close()
            client.close()
        assert http_get(port, "/favicon.ico")[0] == 404
        assert process.poll() is None, "the camera ended before it was stopped"
        process.send_signal(signal.SIGINT)
        process.wait(timeout=SUBPROCESS_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    error = stderr_path.read_text()
    assert process.returncode == camera.EXIT_INTERRUPTED, error
    lines = stdout_path.read_text().splitlines()
    assert_stopped_cleanly(lines, error, "SIGINT")
    assert_refused(port)


CHROMIUM = Path("/usr/bin/chromium")
#: Milliseconds the page may take to show a frame and its predictions (a busy 2-core machine).
PAGE_TIMEOUT_MS = 60_000


@pytest.mark.slow
@pytest.mark.browser
def test_the_live_view_page_in_chromium(long_image_folder):
    # The page at / in a real browser: the MJPEG image shows frames and the predictions follow the loop.
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed")
    with (
        serving_camera(long_image_folder, fps_limit=SERVING_FPS) as serving,
        playwright_api.sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            # Not "load": an MJPEG image never finishes loading.
            page.goto(f"http://127.0.0.1:{serving.port}/", wait_until="domcontentloaded")
            page.wait_for_function("document.querySelector('img').naturalWidth === 50", timeout=PAGE_TIMEOUT_MS)
            page.wait_for_function(
                "document.getElementById('predictions').textContent.includes('bicycle')", timeout=PAGE_TIMEOUT_MS
            )
            first = page.text_content("#status")
            assert first.startswith("frame ") and f"from folder:{long_image_folder}" in first
            cells = page.eval_on_selector_all("#predictions td", "cells => cells.map(cell => cell.textContent)")
            assert cells == ["bicycle", "40.0%", "dolphin", "25.0%", "castle", "20.0%"]
            page.wait_for_function(
                f"document.getElementById('status').textContent !== {json.dumps(first)}", timeout=PAGE_TIMEOUT_MS
            )  # The next frame's record replaced it.
            (REPOSITORY / "test-artifacts").mkdir(exist_ok=True)
            page.screenshot(
                path=str(REPOSITORY / "test-artifacts" / "pi_live_view.png")
            )  # docs/images/pi-live-view.png
        finally:
            browser.close()
        serving.finish()
