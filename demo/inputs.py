"""What a request may hand the demo as an image: a file Gradio itself took in, or inline image data.

    from demo import inputs
    source, name = inputs.image_source(payload, max_bytes=10 * 1024 * 1024)

The image events run with `preprocess=False` (see demo/ui.py), so the payload
arrives as the caller wrote it. Gradio checks that a `path` is an upload only
when the payload carries `"meta": {"_type": "gradio.FileData"}`; without it a
caller could name any file of the server. So the demo checks every path
itself: it must resolve (symbolic links followed) to a regular file inside
Gradio's upload folder, where uploads, webcam and clipboard captures and the
page's examples all live. Anything else gets `REFUSED`, one fixed sentence: the
same for a missing file, a directory, an unreadable file or a real image
elsewhere, so a refusal tells a caller nothing about the server's disk.

Inline data (`data:image/...;base64,...`) is held to the same byte cap as an
upload, measured from the text's length before anything is decoded.

Gradio and edge/ only.
"""

from __future__ import annotations

import base64
import binascii
import functools
from pathlib import Path
from typing import Any

from gradio import utils as gradio_utils

from edge.common import formatting
from edge.common.errors import UserError

# The largest upload or inline image: demo/ui.py's MAX_FILE_SIZE explains the figure.
MAX_FILE_SIZE = "10mb"

# One sentence for every path the demo will not open (see the module docstring).
REFUSED = (
    "This image was not uploaded to this page: upload the file (or drop, paste or capture it), "
    "or send it inline as a data:image/...;base64 URL."
)


class RefusedInput(UserError):
    """The payload names no image the demo may read: a path outside the uploads, too much data, bad data."""


def upload_folder() -> Path:
    """Gradio's upload folder: $GRADIO_TEMP_DIR, else <system temp>/gradio (gradio.utils.get_upload_folder).

    Read at each request, as Gradio reads it, so both agree on the folder.
    """
    return Path(gradio_utils.get_upload_folder()).resolve()


def uploaded_file(path: Any) -> str:
    """`path` resolved, if it is a regular file inside the upload folder; RefusedInput(REFUSED) otherwise."""
    try:
        resolved = Path(path).resolve()
        inside = resolved.is_relative_to(upload_folder()) and resolved.is_file()
    except (OSError, TypeError, ValueError, RuntimeError):  # a malformed path, a symlink loop: refused alike
        inside = False
    if not inside:
        raise RefusedInput(REFUSED)
    return str(resolved)


def decoded_size_bound(encoded: str) -> int:
    """The most bytes this base64 text can decode to: 3 per 4 characters, less the `=` padding.

    Exact for clean base64; characters outside the alphabet (skipped by the decoder) only make it larger.
    """
    padding = len(encoded) - len(encoded.rstrip("="))
    return len(encoded) * 3 // 4 - min(padding, 2)


def decode_data_url(url: str, max_bytes: int | None) -> bytes:
    """The bytes of a `data:...;base64,...` URL, refused before decoding when they could exceed `max_bytes`."""
    _, separator, encoded = url.partition(",")
    if not separator:
        raise RefusedInput("the image data URL is malformed (no comma before the data)")
    if max_bytes is not None and decoded_size_bound(encoded) > max_bytes:
        raise RefusedInput(f"the inline image is larger than the {formatting.size(max_bytes)} limit")
    try:
        return base64.b64decode(encoded, validate=False)
    except (binascii.Error, ValueError):
        raise RefusedInput("the image data URL is malformed") from None


def image_source(payload: Any, max_bytes: int | None) -> tuple[str | bytes, str]:
    """(what edge.preprocess reads, the name to show the caller) from one raw image payload.

    A dict is Gradio's FileData (`path`, `url`, `orig_name`); a string is a data
    URL or a path. The name is the caller's own file name, never the server's path.
    Raises RefusedInput; an empty payload is the caller's to handle first.
    """
    if isinstance(payload, dict):
        url, path = payload.get("url"), payload.get("path")
        name = payload.get("orig_name") if isinstance(payload.get("orig_name"), str) else None
        if isinstance(url, str) and url.startswith("data:"):
            return decode_data_url(url, max_bytes), name or "the image"
        if path:
            source = uploaded_file(path)
            return source, name or Path(source).name
        raise RefusedInput("the payload carried no file and no image data")
    if isinstance(payload, str):
        if payload.startswith("data:"):
            return decode_data_url(payload, max_bytes), "the image"
        source = uploaded_file(payload)
        return source, Path(source).name
    raise RefusedInput(f"unsupported input of type {type(payload).__name__}")


@functools.cache
def default_max_bytes() -> int:
    """MAX_FILE_SIZE in bytes: the cap of a handler built without one (parsed once, not per frame)."""
    return byte_count(MAX_FILE_SIZE)


def byte_count(size: str | int | None) -> int | None:
    """Bytes of a max_file_size as Gradio's launch() reads it ("10mb" is 10 MiB); None means no limit.

    Gradio's own parser (gradio.utils._parse_file_size, what launch() calls), so the cap the handlers
    hold inline images to can never differ from the one Gradio holds uploads to.
    """
    try:
        return gradio_utils._parse_file_size(size)  # pylint: disable=protected-access
    except ValueError:
        raise UserError(f"{size!r}: a file size is a whole number and a unit: b, kb, mb or gb (e.g. 10mb)") from None
