"""The camera's live view over HTTP, for a headless Pi: annotated frames as MJPEG and the latest predictions as JSON.

    python edge/camera.py --headless --serve 8000            # http://127.0.0.1:8000/ (this machine only)
    python edge/camera.py --headless --serve 0.0.0.0:8000    # the whole LAN, on purpose: no authentication

Used by `edge/camera.py` (`--serve [HOST:]PORT`); not a script of its own.
Three routes, and only these (anything else is 404; no file is ever served):

- `/`: a small page showing the stream and the latest predictions (edge/live_view.html, a package data file);
- `/stream.mjpg`: `multipart/x-mixed-replace`, one JPEG of the annotated frame per part;
- `/predictions.json`: the latest frame's record, the very object `--json` prints.

The camera loop never waits for a client: it only swaps the newest frame into
`LatestFrame` (a lock held for a few assignments). Each client's handler runs
on its own thread, waits on the holder's condition with a timeout and sends
the newest frame, so a slow client skips frames and a vanished one only ends
its own thread. A frame is annotated and JPEG-encoded at most once, lazily, by
the first stream client that wants it; with nobody watching, nothing is
encoded. Standard library only (`http.server`).
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import http
import http.server
import importlib.resources
import io
import ipaddress
import json
import re
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

from PIL import Image

from edge.common.configuration import ConfigError
from edge.common.errors import UserError

#: The host bound when `--serve` names only a port: this machine only, so the LAN is an explicit choice.
DEFAULT_HOST = "127.0.0.1"
#: Separates the JPEG parts of the MJPEG stream.
BOUNDARY = "cifar-edge-frame"
#: JPEG quality of the streamed frames: small parts over a Pi's Wi-Fi, still legible text.
JPEG_QUALITY = 80
#: How long a streaming client waits for a new frame before it looks again whether the server is closing, in seconds.
CLIENT_POLL_SECONDS = 0.5
#: How long /predictions.json waits for the first frame before answering 503, in seconds.
FIRST_FRAME_WAIT_SECONDS = 5.0
#: A client whose socket accepts no data for this long is dropped, in seconds (it only ever held its own thread).
CLIENT_SOCKET_TIMEOUT_SECONDS = 10.0
#: How long closing waits for each client's thread after shutting its connection, in seconds.
CLIENT_JOIN_SECONDS = 2.0
#: How often the page asks for /predictions.json, in milliseconds.
PAGE_POLL_MILLISECONDS = 500

ROUTES = ("/", "/stream.mjpg", "/predictions.json")

#: The page at /, a data file of this package (setup.cfg's package_data puts it in the wheel).
PAGE_FILE = "live_view.html"
#: A placeholder in the page: {{NAME}}, capitals and underscores only, so CSS and JavaScript braces never match.
PAGE_MARKER = re.compile(r"\{\{([A-Z_]+)\}\}")


class ServeError(UserError):
    """The live view cannot be served (the port is in use, the host is not this machine's)."""


def parse_address(text: str) -> tuple[str, int]:
    """`[HOST:]PORT` as (host, port); the host defaults to 127.0.0.1, an IPv6 host goes in brackets ([::1]:8000).

    Port 0 asks the system for a free port (the server reports the one it got).
    """
    value = text.strip()
    host, separator, port_text = value.rpartition(":")
    if not separator:
        host = DEFAULT_HOST
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"serve: put an IPv6 host in brackets, e.g. [::1]:8000; got {text!r}")
    expected = "expected [HOST:]PORT, e.g. 8000 or 0.0.0.0:8000"
    if not host or any(character.isspace() or character in "/[]" for character in host):
        raise ConfigError(f"serve: bad host in {text!r}; {expected}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"serve: bad port in {text!r} (0-65535); {expected}")
    return host, int(port_text)


@dataclasses.dataclass(frozen=True)
class Frame:
    """One published frame: its number, its `--json` record, and how to draw it (called at most once, lazily)."""

    number: int
    record: dict[str, Any]
    render: Callable[[], Image.Image]


class LatestFrame:
    """The newest classified frame, shared between the camera loop (one writer) and the HTTP handlers (readers).

    `publish` only swaps a reference under the lock, so the loop never waits
    for a client. `wait_newer` is how a client waits for the next frame;
    `jpeg` encodes a frame once and caches it by frame number.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self._jpeg_lock = threading.Lock()  # Separate from the condition: encoding must never hold up `publish`.
        self._jpeg_number = 0
        self._jpeg = b""
        self.encoded_frames = 0  # How many frames were JPEG-encoded (tests check "at most once per frame").

    def publish(self, number: int, record: dict[str, Any], render: Callable[[], Image.Image]) -> None:
        """Make frame `number` the newest; `record` must not be changed afterwards (readers share it)."""
        with self._condition:
            self._frame = Frame(number, record, render)
            self._condition.notify_all()

    def close(self) -> None:
        """No more frames: every waiting client wakes up and ends."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def wait_newer(self, after: int, timeout: float) -> Frame | None:
        """The newest frame if numbered above `after`, waiting up to `timeout` s; None if none came or closed."""
        with self._condition:
            self._condition.wait_for(
                lambda: self._closed or (self._frame is not None and self._frame.number > after), timeout
            )
            if self._closed or self._frame is None or self._frame.number <= after:
                return None
            return self._frame

    def jpeg(self, frame: Frame) -> tuple[int, bytes]:
        """(number, JPEG bytes) of `frame`, or of a newer frame already encoded for another client."""
        with self._jpeg_lock:
            if self._jpeg_number < frame.number:
                buffer = io.BytesIO()
                frame.render().save(buffer, "JPEG", quality=JPEG_QUALITY)
                self._jpeg_number, self._jpeg = frame.number, buffer.getvalue()
                self.encoded_frames += 1
            return self._jpeg_number, self._jpeg


class LiveServer:
    """The HTTP server of the live view, bound when made (so a port in use fails before the camera opens).

        server = LiveServer("127.0.0.1", 0)   # port 0: the system picks a free one; server.port says which
        server.start()
        server.latest.publish(number, record, render)
        server.close()                        # shutdown, listening socket closed, threads joined

    `close` shuts every client's connection too, so a client blocked in a
    read or write cannot keep its thread (or the camera's exit) waiting.
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = 0):
        live_view_page()  # Read now: a page missing from a broken install fails here, before the camera opens.
        self.latest = LatestFrame()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._server = _HTTPServer((host, port), family, self.latest)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                reason = "the port is in use (another camera or server?); pick another PORT"
            elif error.errno == errno.EADDRNOTAVAIL:
                reason = "that address is not one of this machine's (0.0.0.0 means all of them)"
            else:
                reason = error.strerror or str(error)
            raise ServeError(f"cannot serve on {_host_in_url(host)}:{port}: {reason}") from None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self._server.server_address[0]

    @property
    def port(self) -> int:
        """The port actually bound (the system's choice when 0 was asked for)."""
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{_host_in_url(self.host)}:{self.port}/"

    @property
    def exposed(self) -> bool:
        """Whether other machines can reach it (bound to all interfaces, or to a non-loopback address)."""
        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return True

    def describe(self) -> str:
        """The line the camera prints when it starts serving."""
        line = f"camera: serving {self.url} (MJPEG at /stream.mjpg, JSON at /predictions.json)"
        if self.exposed:
            line += "; reachable from other machines, with no authentication"
        return line

    def start(self) -> LiveServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="live-view-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving: clients told, server shut down, listening socket closed, every thread joined. Idempotent."""
        self.latest.close()
        if self._thread is not None:
            self._server.shutdown()  # Returns once serve_forever has stopped accepting.
            self._thread.join()
            self._thread = None
        self._server.server_close()
        self._server.close_clients()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exception: object) -> None:
        self.close()


@functools.cache
def live_view_page() -> bytes:
    """The page at / (edge/live_view.html) with its placeholders filled, encoded once."""
    template = importlib.resources.files(__package__).joinpath(PAGE_FILE).read_text(encoding="utf-8")
    # An int, written as digits: nothing the page's script could read as code.
    return fill_page(template, {"PAGE_POLL_MILLISECONDS": str(int(PAGE_POLL_MILLISECONDS))}).encode()


def fill_page(template: str, values: dict[str, str]) -> str:
    """`template` with each {{NAME}} replaced by values[NAME], in one pass (a value is never searched for markers).

    Raises ValueError unless the markers and the names given are the same: a marker left in the page or a
    value meant for a marker that is gone is a bug in the page or here, never something to serve.
    """
    markers = set(PAGE_MARKER.findall(template))
    if markers != set(values):
        raise ValueError(f"{PAGE_FILE}: markers {sorted(markers)} but values for {sorted(values)}")
    return PAGE_MARKER.sub(lambda match: values[match.group(1)], template)


def _host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _HTTPServer(http.server.ThreadingHTTPServer):
    """One thread per client (daemon, and tracked so that `close_clients` can end them)."""

    daemon_threads = True
    block_on_close = False  # close_clients joins the threads itself, with a bound.
    allow_reuse_port = False  # Never share a port with another server: a port in use must be an error.

    def __init__(self, address: tuple[str, int], family: int, latest: LatestFrame):
        self.address_family = family
        self.latest = latest
        self._clients_lock = threading.Lock()
        self._clients: dict[socket.socket, threading.Thread] = {}
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client's connection failing (reset, gone mid-answer) is quiet; a bug keeps its traceback."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    def add_client(self, connection: socket.socket) -> None:
        with self._clients_lock:
            self._clients[connection] = threading.current_thread()

    def remove_client(self, connection: socket.socket) -> None:
        with self._clients_lock:
            self._clients.pop(connection, None)

    def close_clients(self) -> None:
        """Shut every open connection (a blocked read or write returns at once), then join their threads."""
        with self._clients_lock:
            clients = list(self._clients.items())
        for connection, _ in clients:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:  # Already closed by the client or by its handler.
                pass
        for _, thread in clients:
            thread.join(CLIENT_JOIN_SECONDS)


#: What a client going away or stalling raises in its handler (BrokenPipe, ConnectionReset, a socket timeout, or
#: the connection shut by `close_clients`): it ends that client's thread, nothing else.
CLIENT_GONE = OSError


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET on the three routes; every other path is 404 and every other method 501 (http.server's default)."""

    server: _HTTPServer
    server_version = "cifar-edge-camera"
    sys_version = ""  # No Python version in the Server header.
    protocol_version = "HTTP/1.0"  # One request per connection: the stream ends with the connection.
    timeout = CLIENT_SOCKET_TIMEOUT_SECONDS

    def setup(self) -> None:
        super().setup()
        self.server.add_client(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:  # Flushing to a client that is gone.
            pass
        finally:
            self.server.remove_client(self.connection)

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]  # A query string is ignored; the path must match a route exactly.
        try:
            if path == "/":
                self._send(http.HTTPStatus.OK, "text/html; charset=utf-8", live_view_page())
            elif path == "/predictions.json":
                self._send_predictions()
            elif path == "/stream.mjpg":
                self._send_stream()
            else:
                self.send_error(http.HTTPStatus.NOT_FOUND, "Not found", f"only {', '.join(ROUTES)} are served")
        except CLIENT_GONE:
            self.close_connection = True

    def log_message(self, format: str, *arguments: Any) -> None:
        """Quiet: a line per request would bury the camera's own output on stderr."""

    def _send(self, status: http.HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _send_predictions(self) -> None:
        frame = self.server.latest.wait_newer(0, FIRST_FRAME_WAIT_SECONDS)
        if frame is None:
            body = json.dumps({"error": "no frame classified yet"}).encode()
            self._send(http.HTTPStatus.SERVICE_UNAVAILABLE, "application/json", body)
            return
        self._send(http.HTTPStatus.OK, "application/json", json.dumps(frame.record).encode())

    def _send_stream(self) -> None:
        latest = self.server.latest
        self.send_response(http.HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        sent = 0
        while not latest.closed:
            frame = latest.wait_newer(sent, CLIENT_POLL_SECONDS)
            if frame is None:
                continue
            sent, jpeg = latest.jpeg(frame)  # The newest: frames that came while this client was slow are skipped.
            self.wfile.write(
                f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                + jpeg
                + b"\r\n"
            )
            self.wfile.flush()
