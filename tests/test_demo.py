"""The web demo: demo/ui.py's pieces in-process, then demo/app.py on localhost called with gradio_client.

    .venv/bin/pytest tests/test_demo.py -x -q              # all (starts one server; ~1 min)
    .venv/bin/pytest tests/test_demo.py -x -q -m "not slow"

The model is tests/conftest.py's `smoke_run` (trained and exported once per session).
The server runs in a subprocess under demo/local_server.py's bootstrap, which
makes TensorFlow and Keras unimportable: the demo must work without them.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from conftest import as_upload
from PIL import Image

from demo import app as demo_app
from demo import body_limit, explain, inputs, live, local_server, panels, ui
from demo import models as demo_models
from edge import occlusion, runtime
from edge.common import artifacts, formatting, run_folder

REPOSITORY = Path(__file__).resolve().parents[1]
PHOTOS = sorted((REPOSITORY / "demo" / "examples").glob("*.jpg"))


# -- the model under test ---------------------------------------------------------------


@pytest.fixture(scope="session")
def served_run(smoke_run) -> Path:
    """The finished smoke run of tests/conftest.py: trained, evaluated, exported to tflite/."""
    return smoke_run


@pytest.fixture(scope="session")
def models(served_run) -> demo_models.DemoModels:
    return demo_models.load_models(run_folder.find_model_files(folder=served_run))


def _probability_tolerance(model_path: Path) -> float:
    """How far above 1 the top-k probabilities may sum: each dequantized uint8 probability may be up to
    half a quantization step above its float value; float outputs get float32 rounding."""
    scale = runtime.Classifier(model_path).output_quantization[0]
    return ui.TOP_K * scale / 2 + 1e-5


# -- bad and odd images --------------------------------------------------------------------


def _png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height pixels: a decompression bomb in 100 bytes."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def bad_files(folder: Path) -> dict[str, Path]:
    """Files the demo must refuse with a readable error, and what the error must say."""
    photo = PHOTOS[0].read_bytes()
    files = {
        "not an image": ("notes.png", b"this is a text file, not a picture\n" * 20),
        "truncated": ("truncated.jpg", photo[: len(photo) // 3]),
        "too large": ("bomb.png", _png_declaring(30_000, 30_000)),
        "empty": ("empty.png", b""),
    }
    paths = {}
    for reason, (name, content) in files.items():
        (folder / name).write_bytes(content)
        paths[reason] = folder / name
    return paths


def odd_images(folder: Path) -> list[Path]:
    """Valid images in unusual forms, each of which must be classified."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    paths = []

    def save(name, image, **options):
        image.save(folder / name, **options)
        paths.append(folder / name)

    rgba = np.dstack([pixels, rng.integers(0, 256, (40, 60), dtype=np.uint8)])
    save("rgba.png", Image.fromarray(rgba, "RGBA"))
    save("gray.png", Image.fromarray(pixels[:, :, 0], "L"))
    save("palette.png", Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE))
    frames = [Image.fromarray(np.roll(pixels, shift, axis=1)).convert("P") for shift in (0, 10, 20)]
    save("animated.gif", frames[0], save_all=True, append_images=frames[1:], duration=100, loop=0)
    pages = [Image.fromarray(pixels), Image.fromarray(pixels[::-1])]
    save("pages.tiff", pages[0], save_all=True, append_images=pages[1:])
    save("one_pixel.png", Image.fromarray(pixels[:1, :1]))
    return paths


def _payload(path: Path) -> dict:
    """What Gradio hands the handlers (preprocess=False) for an upload of `path`: its FileData as a dict,
    pointing at a copy in the upload folder (tests/conftest.py), where Gradio puts every upload."""
    return {"path": str(as_upload(path)), "orig_name": path.name, "url": None, "meta": {"_type": "gradio.FileData"}}


def _data_url(content: bytes, kind: str = "image/jpeg") -> str:
    return f"data:{kind};base64," + base64.b64encode(content).decode("ascii")


# -- in-process ---------------------------------------------------------------------------


def test_find_model_files_accepts_the_run_its_tflite_folder_and_one_file(served_run):
    for folder in (served_run, served_run / "tflite"):
        files = run_folder.find_model_files(folder=folder)
        assert files.model.name == run_folder.INT8_MODEL_FILE and files.reference.name == run_folder.FLOAT_MODEL_FILE
    single = run_folder.find_model_files(model=served_run / "tflite" / run_folder.FLOAT_MODEL_FILE)
    assert single.model.name == run_folder.FLOAT_MODEL_FILE and single.reference is None  # not compared with itself


def test_find_model_files_serves_what_metadata_names(served_run, tmp_path):
    folder = tmp_path / "tflite"
    shutil.copytree(served_run / "tflite", folder)
    metadata = artifacts.read_json(folder / "metadata.json")
    assert metadata["served"] == "int8" and run_folder.find_model_files(folder=folder).model.name == "model_int8.tflite"
    artifacts.write_json(folder / "metadata.json", {**metadata, "served": "float32"})  # as when int8 misses the gate
    files = run_folder.find_model_files(folder=folder)
    assert files.model.name == "model_float32.tflite" and files.reference is None


def test_find_model_files_names_what_is_missing(tmp_path):
    with pytest.raises(run_folder.ModelFilesError, match=run_folder.INT8_MODEL_FILE):
        run_folder.find_model_files(folder=tmp_path)
    with pytest.raises(run_folder.ModelFilesError, match="not found"):
        run_folder.find_model_files(model=tmp_path / "nothing.tflite")
    with pytest.raises(run_folder.ModelFilesError, match="exactly one"):
        run_folder.find_model_files()


def test_predict_and_compare_in_process(models, tmp_path):
    predict, compare = ui.make_predict(models), ui.make_compare(models)
    expected = min(ui.TOP_K, len(models.model.labels))
    for path in PHOTOS + odd_images(tmp_path):
        answer = predict(_payload(path))
        assert len(answer) == expected and set(answer) <= set(models.model.labels), path.name
        int8_answer, float_answer, details = compare(_payload(path))
        assert int8_answer == answer and len(float_answer) == expected
        assert "ms" in details and run_folder.INT8_MODEL_FILE in details
    assert compare(None) == (None, None, "")  # a cleared picture clears the answers


def test_where_it_looked_draws_the_int8_occlusion_map_of_a_photo(models, tmp_path):
    overlay, caption = explain.where_it_looked(models, PHOTOS[0])
    assert isinstance(overlay, Image.Image) and overlay.mode == "RGB"
    assert overlay.size == (occlusion.DISPLAY_SIZE, occlusion.DISPLAY_SIZE)
    top_label = next(iter(models.model.classify(PHOTOS[0], 1)))[0]
    assert f"**{top_label}**" in caption and "1 model call," in caption and "\n" not in caption
    again, _ = explain.where_it_looked(models, PHOTOS[0])
    assert np.array_equal(np.asarray(overlay), np.asarray(again))  # deterministic
    handler = explain.make_explain(models, ui._image_source)  # as build_demo wires it
    assert handler(None) == (None, "")
    assert np.array_equal(np.asarray(handler(_payload(PHOTOS[0]))[0]), np.asarray(overlay))
    broken = bad_files(tmp_path)["truncated"]
    with pytest.raises(gr.Error, match="truncated"):
        handler(_payload(broken))


def test_webcam_data_urls_are_classified(models):
    """Some webcam captures arrive as a base64 data URL rather than a file."""
    encoded = base64.b64encode(PHOTOS[0].read_bytes()).decode("ascii")
    answer = ui.make_predict(models)({"path": None, "url": f"data:image/jpeg;base64,{encoded}"})
    assert answer == dict(models.model.classify(PHOTOS[0], ui.TOP_K))
    with pytest.raises(gr.Error, match="not an image"):
        ui.make_predict(models)({"path": None, "url": "data:image/png;base64,bm90IGFuIGltYWdl"})


def _server_files(folder: Path) -> dict[str, object]:
    """Payloads that name files of the server the demo must not open, each a different kind of path."""
    outside = folder / "outside"
    outside.mkdir()
    shutil.copyfile(PHOTOS[0], outside / "photo.jpg")  # a real image, outside the upload folder
    link = Path(inputs.upload_folder()) / "link-out"
    link.mkdir(exist_ok=True)
    (link / "photo.jpg").unlink(missing_ok=True)
    (link / "photo.jpg").symlink_to(outside / "photo.jpg")  # inside by name, outside once resolved
    return {
        "an image elsewhere": {"path": str(outside / "photo.jpg")},
        "the same, as Gradio's FileData": {"path": str(outside / "photo.jpg"), "meta": {"_type": "gradio.FileData"}},
        "a repository file": {"path": str(PHOTOS[0]), "orig_name": "mine.jpg"},
        "not an image": {"path": "/etc/passwd"},
        "a directory": {"path": str(folder)},
        "missing": {"path": str(folder / "no-such-file.png")},
        "a climb out of the uploads": {"path": str(Path(inputs.upload_folder()) / ".." / "outside" / "photo.jpg")},
        "a link out of the uploads": {"path": str(link / "photo.jpg")},
        "a bare path": str(outside / "photo.jpg"),
    }


def test_only_uploads_and_inline_images_are_read(models, tmp_path):
    """Security: every server path outside Gradio's upload folder gets the one fixed refusal, whatever it is."""
    predict = ui.make_predict(models)
    handler = explain.make_explain(models, ui._image_source)
    for kind, payload in _server_files(tmp_path).items():
        for call in (predict, ui.make_compare(models), handler):
            with pytest.raises(gr.Error) as raised:
                call(payload)
            assert raised.value.message == inputs.REFUSED, (kind, raised.value.message)
    # What Gradio took in is read: an uploaded copy, and inline data.
    assert predict(_payload(PHOTOS[0])) == predict(_data_url(PHOTOS[0].read_bytes()))
    assert predict({"path": str(as_upload(PHOTOS[0]))}) == dict(models.model.classify(PHOTOS[0], ui.TOP_K))


def test_inline_images_are_capped_before_decoding(models, monkeypatch):
    """The upload cap holds for data URLs too, judged from the text's length: nothing is decoded first."""
    photo = PHOTOS[0].read_bytes()
    cap = len(photo) - 1
    predict = ui.make_predict(models, max_bytes=lambda: cap)
    for length in range(len(photo) - 3, len(photo) + 1):  # every padding: the bound is the decoded size
        assert inputs.decoded_size_bound(base64.b64encode(photo[:length]).decode()) == length

    def no_decoding(*arguments, **options):
        raise AssertionError("decoded before the size check")

    with monkeypatch.context() as patched:
        patched.setattr(inputs.base64, "b64decode", no_decoding)
        for payload in (_data_url(photo), {"url": _data_url(photo)}):
            with pytest.raises(gr.Error, match=f"larger than the {formatting.size(cap)} limit"):
                predict(payload)
    exactly_at_the_cap = ui.make_predict(models, max_bytes=lambda: len(photo))
    assert exactly_at_the_cap(_data_url(photo)) == dict(models.model.classify(PHOTOS[0], ui.TOP_K))
    assert inputs.default_max_bytes() == 10 * 1024 * 1024  # the default cap: MAX_FILE_SIZE, 10 MiB


def test_module_level_demo_is_built_on_first_access(served_run, tmp_path, monkeypatch):
    """`demo.app.demo` (the Gradio convention) serves models/ next to the app, as in the Space folder."""
    shutil.copytree(served_run / "tflite", tmp_path / "models")
    monkeypatch.setattr(demo_app, "CODE_ROOT", tmp_path)
    monkeypatch.delitem(demo_app.__dict__, "demo", raising=False)
    try:
        assert isinstance(demo_app.demo, gr.Blocks)
    finally:
        demo_app.__dict__.pop("demo", None)


def test_bad_images_raise_readable_gradio_errors(models, tmp_path):
    predict = ui.make_predict(models)
    expected_words = {
        "not an image": "not an image",
        "truncated": "truncated",
        "too large": "too large",
        "empty": "empty",
    }
    for reason, path in bad_files(tmp_path).items():
        with pytest.raises(gr.Error) as raised:
            predict(_payload(path))
        message = raised.value.message
        assert path.name in message and expected_words[reason] in message, message
        assert str(tmp_path) not in message  # the visitor sees their file name, not the server's path
    with pytest.raises(gr.Error, match="No image"):
        predict(None)


def test_analytics_are_off_and_the_upload_cache_is_cleaned(models):
    """demo/app.py turns Gradio's analytics off before gradio loads; the Blocks sends none and empties its cache."""
    blocks = ui.build_demo(models)
    assert blocks.analytics_enabled is False and blocks.delete_cache == ui.DELETE_CACHE
    environment = {key: value for key, value in os.environ.items() if key != "GRADIO_ANALYTICS_ENABLED"}
    result = subprocess.run(
        [sys.executable, "-c", "import os, demo.app; print(os.environ['GRADIO_ANALYTICS_ENABLED'])"],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr


def test_panels_show_the_quantization_numbers_and_the_model(models):
    about = panels.about_markdown(models)
    assert models.metadata.get("dataset", "unknown") in about and "KiB" in about
    table = panels.quantization_table(
        {
            "reference": {"top1": 0.8, "top5": 0.95},
            "variants": {
                "float32": {"top1": 0.8, "top5": 0.95, "agreement": 1.0},
                "int8": {"top1": 0.79, "top5": 0.94, "agreement": 0.98, "size_bytes": 4_200_000, "latency_ms": 12.5},
            },
            "max_drop": 1.0,
            "passed": True,
        }
    )
    assert "| int8 | 79.0% | 94.0% | 98.0% | 4.01 MiB | 12.5 ms |" in table and "passed" in table
    if models.quantization is None:
        assert "No quantization.json" in panels.quantization_markdown(models)


def test_examples_are_chosen_among_the_model_classes():
    assert [path.name for path in panels.example_images(["rocket", "cup", "tiger"])] == ["cup.jpg", "rocket.jpg"]
    assert panels.example_images(["no_such_class"]) == []
    sources = (REPOSITORY / "demo" / "examples" / "SOURCES.md").read_text()
    for path in panels.EXAMPLES_FOLDER.rglob("*"):
        if path.suffix in panels.EXAMPLE_SUFFIXES:
            assert path.stat().st_size < 100_000, path
            assert path.name in sources or path.parent.name == "smoke", f"{path.name} has no source in SOURCES.md"


def test_default_model_folder_prefers_the_bundle_then_the_newest_run(tmp_path):
    with pytest.raises(demo_models.DemoError, match="no model to serve"):
        demo_app.default_model_folder(tmp_path)
    for index, name in enumerate(("older", "newer")):
        model = tmp_path / "runs" / name / "tflite" / run_folder.INT8_MODEL_FILE
        model.parent.mkdir(parents=True)
        model.write_bytes(b"x")
        artifacts.write_json(model.parent / run_folder.METADATA_FILE, {"served": "int8"})  # a finished export
        os.utime(model, (1_000_000 + index, 1_000_000 + index))
    assert demo_app.default_model_folder(tmp_path) == tmp_path / "runs" / "newer" / "tflite"
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / run_folder.INT8_MODEL_FILE).write_bytes(b"x")
    artifacts.write_json(tmp_path / "models" / run_folder.METADATA_FILE, {"served": "int8"})
    assert demo_app.default_model_folder(tmp_path) == tmp_path / "models"


def test_the_demo_refuses_a_folder_the_check_has_not_passed(served_run, tmp_path, capsys):
    """An export killed after model_int8.tflite leaves no metadata.json: --run and the default refuse
    it in one line naming the fix; --model FILE still serves the file the user named."""
    folder = tmp_path / "runs" / "killed" / "tflite"
    shutil.copytree(served_run / "tflite", folder)
    (folder / run_folder.METADATA_FILE).unlink()
    for found in (
        lambda: run_folder.find_model_files(folder=folder.parent),
        lambda: demo_app.default_model_folder(tmp_path),
    ):
        with pytest.raises(run_folder.UncheckedModelError, match=f"python train/export.py --run {folder.parent}"):
            found()
    assert demo_app.main(["--run", str(folder.parent)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "python train/export.py --run" in lines[0]
    assert (
        run_folder.find_model_files(model=folder / run_folder.INT8_MODEL_FILE).model.name == run_folder.INT8_MODEL_FILE
    )


def test_command_line_options(served_run, capsys):
    config = demo_app.parse_config(["--run", str(served_run), "--port", "7999", "--no-share"])
    assert config.run == str(served_run) and config.port == 7999 and config.share is False
    assert demo_app.main(["--run", str(served_run), "--model", "x.tflite"]) == 2
    assert "not both" in capsys.readouterr().err


def test_help_gives_each_default_once():
    """A help text that already says its default gets no "(default: None)" after it; the others keep theirs."""
    import argparse

    from edge.common import configuration

    parser = argparse.ArgumentParser()
    configuration.add_arguments(parser, demo_app.DemoConfig)
    helps = {action.dest: action.help for action in parser._actions if action.help}
    assert all(text.lower().count("default") <= 1 for text in helps.values()), helps
    assert "(default: None)" not in helps["port"] and "$GRADIO_SERVER_PORT" in helps["port"]
    assert helps["model"].endswith("(default: None)")


def test_the_demo_modules_do_not_import_tensorflow(served_run):
    """Build the page and classify in a fresh interpreter, then look at sys.modules."""
    code = (
        "import sys; from demo import app, ui; "
        f"blocks, models = app.build(app.DemoConfig(run={str(served_run)!r})); "
        f"ui.make_predict(models)({_data_url(PHOTOS[0].read_bytes())!r}); "
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('tensorflow', 'keras')))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


# -- the served app -------------------------------------------------------------------------

UPLOAD_LIMIT = "200kb"  # small, so the test can exceed it cheaply


@pytest.fixture(scope="module")
def app_server(served_run):
    server = local_server.LocalServer(
        REPOSITORY / "demo" / "app.py", ["--run", str(served_run), "--max-file-size", UPLOAD_LIMIT], cwd=REPOSITORY
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(app_server):
    from gradio_client import Client

    return Client(app_server.url, verbose=False)


def _check_label_result(result: dict, labels: list[str], tolerance: float) -> None:
    confidences = result["confidences"]
    assert len(confidences) == min(ui.TOP_K, len(labels))
    assert {item["label"] for item in confidences} <= set(labels)
    values = [item["confidence"] for item in confidences]
    assert values == sorted(values, reverse=True) and all(value >= 0 for value in values)
    assert sum(values) <= 1 + tolerance
    assert result["label"] == confidences[0]["label"]


@pytest.mark.slow
def test_predict_api_on_real_photos(app_server, client, served_run, models):
    from gradio_client import handle_file

    tolerance = _probability_tolerance(models.files.model)
    examples = PHOTOS + panels.example_images(models.model.labels)
    for path in examples:
        result = client.predict(handle_file(str(path)), api_name="/predict")
        _check_label_result(result, models.model.labels, tolerance)
        # The same answer as the model in this process: the server serves the int8 file.
        expected = models.model.classify(path, ui.TOP_K)
        assert [item["label"] for item in result["confidences"]] == [label for label, _ in expected]
    int8_answer, float_answer, details = client.predict(handle_file(str(PHOTOS[0])), api_name="/compare")
    _check_label_result(int8_answer, models.model.labels, tolerance)
    _check_label_result(float_answer, models.model.labels, _probability_tolerance(models.files.reference))
    assert "Latency" in details and run_folder.INT8_MODEL_FILE in details
    overlay_file, caption = client.predict(handle_file(str(PHOTOS[0])), api_name="/explain")
    with Image.open(overlay_file) as overlay:  # "Where it looked", computed by the served int8 model
        assert overlay.size == (occlusion.DISPLAY_SIZE, occlusion.DISPLAY_SIZE)
    # The same class, probability and largest fall as in this process; only the milliseconds differ.
    assert caption.rsplit(", ", 1)[0] == explain.where_it_looked(models, PHOTOS[0])[1].rsplit(", ", 1)[0]
    assert app_server.blocked_imports() == []  # TensorFlow was never even attempted


@pytest.mark.slow
def test_bad_inputs_get_errors_and_the_server_keeps_serving(app_server, client, models, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    tolerance = _probability_tolerance(models.files.model)
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(300_000))  # over UPLOAD_LIMIT
    cases = {**{reason: path for reason, path in bad_files(tmp_path).items()}, "over the upload limit": big}
    for reason, path in cases.items():
        with pytest.raises(Exception) as raised:
            client.predict(handle_file(str(path)), api_name="/predict")
        if reason != "over the upload limit":  # refused by Gradio at upload time, before the app
            assert isinstance(raised.value, AppError) and path.name in str(raised.value), (reason, raised.value)
        result = client.predict(handle_file(str(PHOTOS[0])), api_name="/predict")
        _check_label_result(result, models.model.labels, tolerance)
    for path in odd_images(tmp_path):
        _check_label_result(client.predict(handle_file(str(path)), api_name="/predict"), models.model.labels, tolerance)
    assert app_server.alive()


def _raw_call(url: str, api_name: str, data: list) -> tuple[str, object]:
    """POST /gradio_api/call/<api_name> as any HTTP client can, then read its result: ("complete"|"error", data)."""
    import httpx

    with httpx.Client(base_url=url, timeout=120) as http:
        started = http.post(f"gradio_api/call/{api_name}", json={"data": data})
        started.raise_for_status()
        with http.stream("GET", f"gradio_api/call/{api_name}/{started.json()['event_id']}") as events:
            kind = None
            for line in events.iter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: ") and kind in ("complete", "error"):
                    return kind, json.loads(line.removeprefix("data: "))
    raise AssertionError(f"{api_name}: the event stream ended without a result")


def _error_text(result: tuple[str, object]) -> str:
    kind, data = result
    assert kind == "error", result
    return data.get("error") if isinstance(data, dict) else str(data)


@pytest.mark.slow
def test_the_server_reads_no_file_a_caller_names(app_server, client, models, tmp_path):
    """Security, over HTTP: /predict, /compare and /explain refuse every server path alike, and serve uploads."""
    from gradio_client import handle_file

    for kind, payload in _server_files(tmp_path).items():
        for api_name in ("predict", "compare", "explain"):
            result = _raw_call(app_server.url, api_name, [payload])
            message = _error_text(result)
            if isinstance(payload, str) or "meta" in payload:
                # Refused by Gradio before the handler (its FileData check, its data model); its text, which
                # names the server's absolute path, is withheld (show_error=False): a bare error.
                assert message is None, (kind, message)
            else:
                assert message == inputs.REFUSED, (kind, api_name, message)  # one sentence: no path, no "No such file"
            assert str(tmp_path) not in json.dumps(result) and os.getcwd() not in json.dumps(result), result
    result = client.predict(handle_file(str(PHOTOS[0])), api_name="/predict")  # an upload is still read
    assert result["label"] == next(iter(models.model.classify(PHOTOS[0], 1)))[0]
    assert app_server.alive()


@pytest.mark.slow
def test_inline_images_over_the_upload_cap_are_refused_over_http(app_server, models):
    """The server's --max-file-size holds for data URLs: one over it is refused, one under it is classified."""
    limit = inputs.byte_count(UPLOAD_LIMIT)
    over = _data_url(PHOTOS[0].read_bytes() + os.urandom(limit), "image/png")
    message = _error_text(_raw_call(app_server.url, "predict", [{"url": over}]))
    assert message == f"the inline image is larger than the {formatting.size(limit)} limit", message
    kind, data = _raw_call(app_server.url, "predict", [{"url": _data_url(PHOTOS[0].read_bytes())}])
    assert kind == "complete" and data[0]["label"] == next(iter(models.model.classify(PHOTOS[0], 1)))[0], data


def test_the_body_bound_holds_an_image_at_the_cap_and_little_more():
    """The request-body bound fits one inline image (or upload) at the cap and its envelope, and not much more."""
    cap = inputs.byte_count(UPLOAD_LIMIT)
    at_cap = json.dumps(
        {
            "data": [
                {
                    "url": _data_url(os.urandom(cap), "image/png"),
                    "orig_name": "x" * 255,
                    "meta": {"_type": "gradio.FileData"},
                }
            ],
            "session_hash": "s" * 32,
        }
    ).encode()
    bound = body_limit.body_bound(cap)
    assert len(at_cap) <= bound <= cap * 4 // 3 + body_limit.BODY_OVERHEAD_BYTES + 4


# A request body this large is what issue 17 sent: a 40 MiB image as a data URL. One used to add about
# its size to the server's resident memory for good (4 of them: 314 -> 704 MiB); refused by
# demo/body_limit.py, none is read, so the server's memory may move only by allocator noise.
OVERSIZED_BODY_BYTES = 53 * 1024 * 1024
OVERSIZED_REQUESTS = 4
# How far the server's resident memory may move over OVERSIZED_REQUESTS refused requests: under half
# of what a single such body used to keep, and well above the few MiB a served request moves it.
RSS_TOLERANCE_MIB = 24


def _resident_mib(pid: int) -> float:
    """Resident memory of a process in MiB: psutil when installed, else /proc/PID/status's VmRSS."""
    try:
        import psutil
    except ImportError:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024
    return psutil.Process(pid).memory_info().rss / 2**20


def _post_raw(url: str, path: str, headers: dict[str, str], body_parts: list[bytes] = ()) -> bytes:
    """POST over a bare socket (headers, then `body_parts` as written), and what the server answered.

    A server that refuses a body closes the connection without reading the rest, so a write may fail;
    the answer is read anyway (empty when the connection was reset first).
    """
    import socket
    from urllib.parse import urlsplit

    address = urlsplit(url)
    lines = [f"POST {path} HTTP/1.1", f"Host: {address.netloc}", *(f"{key}: {value}" for key, value in headers.items())]
    with socket.create_connection((address.hostname, address.port), timeout=120) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
        try:
            for part in body_parts:
                connection.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer


def _status_of(answer: bytes) -> int | None:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


def _oversized_json(size: int) -> bytes:
    """A well-formed /call/predict body of `size` bytes: one inline image, base64 text all "A"s."""
    head, tail = b'{"data":[{"url":"data:image/png;base64,', b'"}]}'
    return head + b"A" * (size - len(head) - len(tail)) + tail


def _chunked(body: bytes, chunk_bytes: int = 16 * 1024) -> list[bytes]:
    """`body` in HTTP/1.1 chunked framing, without the final empty chunk."""
    return [
        b"%x\r\n%s\r\n" % (len(body[start : start + chunk_bytes]), body[start : start + chunk_bytes])
        for start in range(0, len(body), chunk_bytes)
    ]


@pytest.mark.slow
def test_oversized_request_bodies_are_refused_before_they_are_read(app_server, models):
    """Over HTTP: a body over the bound gets 413, whether it declares its length or comes chunked."""
    bound = body_limit.body_bound(inputs.byte_count(UPLOAD_LIMIT))
    json_type = {"Content-Type": "application/json"}
    # Declared too large: refused from the headers alone, before any of the body is sent.
    answer = _post_raw(app_server.url, "/gradio_api/call/predict", {**json_type, "Content-Length": str(bound + 1)})
    assert _status_of(answer) == body_limit.STATUS_TOO_LARGE and answer.endswith(body_limit.REFUSAL), answer[:300]
    # Chunked, no length: refused once the count passes the bound. Exactly one byte past it is sent,
    # all of which the server must read to know, so the answer is never lost to a reset.
    answer = _post_raw(
        app_server.url,
        "/gradio_api/call/predict",
        {**json_type, "Transfer-Encoding": "chunked"},
        _chunked(_oversized_json(bound + 1)),
    )
    assert _status_of(answer) == body_limit.STATUS_TOO_LARGE and answer.endswith(body_limit.REFUSAL), answer[:300]
    # The same route still serves a normal call, sent chunked too.
    photo = json.dumps({"data": [{"url": _data_url(PHOTOS[0].read_bytes())}]}).encode()
    answer = _post_raw(
        app_server.url,
        "/gradio_api/call/predict",
        {**json_type, "Transfer-Encoding": "chunked"},
        _chunked(photo) + [b"0\r\n\r\n"],
    )
    assert _status_of(answer) == 200 and b"event_id" in answer, answer[:300]
    kind, data = _raw_call(app_server.url, "predict", [{"url": _data_url(PHOTOS[0].read_bytes())}])
    assert kind == "complete" and data[0]["label"] == next(iter(models.model.classify(PHOTOS[0], 1)))[0], data


@pytest.mark.slow
def test_oversized_request_bodies_leave_the_server_memory_where_it_was(app_server, models):
    """Issue 17's four 53 MiB inline images, sent whole: the server's resident memory stays put."""
    pid = app_server.process.pid
    photo = [{"url": _data_url(PHOTOS[0].read_bytes())}]
    expected = next(iter(models.model.classify(PHOTOS[0], 1)))[0]
    body = _oversized_json(OVERSIZED_BODY_BYTES)
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    parts = [body[start : start + 2**20] for start in range(0, len(body), 2**20)]
    _post_raw(app_server.url, "/gradio_api/call/predict", headers, parts)  # the refusal path, warmed up
    assert _raw_call(app_server.url, "predict", photo)[1][0]["label"] == expected
    before = _resident_mib(pid)
    answers = [_post_raw(app_server.url, "/gradio_api/call/predict", headers, parts) for _ in range(OVERSIZED_REQUESTS)]
    after = _resident_mib(pid)
    print(f"server resident memory {before:.0f} -> {after:.0f} MiB over {OVERSIZED_REQUESTS} refused bodies")
    assert all(_status_of(answer) in (body_limit.STATUS_TOO_LARGE, None) for answer in answers), answers
    assert abs(after - before) <= RSS_TOLERANCE_MIB, f"resident memory {before:.0f} -> {after:.0f} MiB"
    assert _raw_call(app_server.url, "predict", photo)[1][0]["label"] == expected and app_server.alive()


@pytest.mark.slow
def test_the_live_stream_is_not_an_api(app_server, client):
    """/live_frame is the page's stream, not an endpoint: gradio_client cannot find it (it used to hang on it)."""
    import httpx

    named = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert named == {"/predict", "/compare", "/explain"}
    info = httpx.get(app_server.url + "gradio_api/info", timeout=60).json()
    assert set(info["named_endpoints"]) == named and not info.get("unnamed_endpoints")
    with pytest.raises(ValueError, match="Cannot find a function with `api_name`: /live_frame"):
        client.predict(api_name="/live_frame")  # refused at once, from the client's own copy of the API


# How long a page's stream may take to give its first answer while raw callers have tried to hold
# every live slot. An answer takes milliseconds; a slot held by a raw caller would free up only after
# live.TIME_LIMIT_S (120 s). The margin is for a busy 2-core test machine, and it is still a quarter of that.
LIVE_START_BOUND_S = 30


def _page_stream_first_answer(url: str, frame: dict) -> tuple[str, dict]:
    """Do what the page does: its load event, then a stream with one frame; (event id, first streamed message)."""
    import uuid

    import httpx

    session = uuid.uuid4().hex
    dependencies = httpx.get(url + "config", timeout=60).json()["dependencies"]
    mark = next(item for item in dependencies if any(event == "load" for _, event in item["targets"]))
    stream = next(item for item in dependencies if item.get("api_name") == "live_frame")
    with httpx.Client(base_url=url, timeout=120) as http:

        def join(dependency: dict, data: list) -> str:
            answer = http.post(
                "gradio_api/queue/join",
                json={
                    "data": data,
                    "event_data": None,
                    "fn_index": dependency["id"],
                    "trigger_id": dependency["targets"][0][0],
                    "session_hash": session,
                },
            )
            answer.raise_for_status()
            return answer.json()["event_id"]

        join(mark, [])
        event_id = join(stream, [frame, None, None])
        with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as events:
            for line in events.iter_lines():
                message = json.loads(line.removeprefix("data: ")) if line.startswith("data: ") else {}
                if message.get("event_id") == event_id and message.get("msg") in (
                    "process_streaming",
                    "process_completed",
                ):
                    http.post(f"gradio_api/stream/{event_id}/close")  # end the stream, as the stop button does
                    return event_id, message
    raise AssertionError("the page's stream gave no answer")


@pytest.mark.slow
def test_raw_callers_cannot_hold_the_live_slots(app_server, models):
    """More raw POST /call/live_frame callers than live slots, none reading: the page's stream still starts."""
    import time

    import httpx

    frame = {"url": _data_url(PHOTOS[0].read_bytes())}
    with httpx.Client(base_url=app_server.url, timeout=120) as http:
        raw_events = [
            http.post("gradio_api/call/live_frame", json={"data": [frame]}).json()["event_id"]
            for _ in range(live.LIVE_CONCURRENCY_LIMIT + 2)
        ]
    start = time.monotonic()
    _, message = _page_stream_first_answer(app_server.url, frame)
    elapsed_s = time.monotonic() - start
    assert message["msg"] == "process_streaming" and message["success"], message
    answer = message["output"]["data"][0]
    assert answer["label"] == next(iter(models.model.classify(PHOTOS[0], 1)))[0], answer
    assert elapsed_s < LIVE_START_BOUND_S, f"the page's stream waited {elapsed_s:.0f} s for a live slot"
    # Each raw caller was refused at its first call, which ended its stream (read only now).
    with httpx.Client(base_url=app_server.url, timeout=120) as http:
        for event_id in raw_events:
            with http.stream("GET", f"gradio_api/call/live_frame/{event_id}") as events:
                lines = list(events.iter_lines())
            assert "event: error" in lines, lines
            assert any(live.NOT_FROM_THE_PAGE in line for line in lines) or "data: null" in lines, lines


@pytest.mark.slow
def test_load_benchmark_runs_against_the_app(app_server):
    """benchmarks/demo_load.py against the running app: concurrent callers, no failed request."""
    result = subprocess.run(
        [
            sys.executable,
            str(REPOSITORY / "benchmarks" / "demo_load.py"),
            "--url",
            app_server.url,
            "--callers",
            "3",
            "--requests",
            "2",
            "--warmup",
            "1",
        ],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed 0" in result.stdout and "p95" in result.stdout and "requests/s" in result.stdout
    assert app_server.alive()
