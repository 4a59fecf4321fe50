"""The one Gradio UI of the demo: the page's layout, its request handlers and the server's launch.

`demo/app.py` (local) and the Hugging Face Space's `app.py` both call
`build_demo(models.load_models(run_folder.find_model_files(folder)))`, so the page a
visitor sees on the Space is the page served locally; nothing is copied by hand.
Finding the files is edge/common/run_folder.py's, loading them demo/models.py's, and
the panels' Markdown demo/panels.py's; this module is what needs Gradio.

The page shows, for one photo, the top-5 of the int8 model (the file that also
runs on the Raspberry Pi), the same photo through the float32 model side by
side, where the model looked (an occlusion map, demo/explain.py, drawn once the
answer is shown), the latency of the request, which model answered, the float-vs-int8
numbers measured on the test set (`quantization.json`), and an "about this
model" panel. The int8 prediction is also an API endpoint:

    from gradio_client import Client, handle_file
    Client("http://127.0.0.1:7860").predict(handle_file("photo.jpg"), api_name="/predict")

Imports gradio, numpy, Pillow and a TFLite runtime (through edge.runtime);
never TensorFlow, so the Space starts in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gradio as gr

from demo import body_limit, explain, inputs, live, panels
from demo.models import DemoModels
from edge import preprocess, runtime
from edge.common import formatting, records, run_folder

TOP_K = records.TOP_K  # labels shown per model: the top-k every record and report uses

# Uploads above this are refused by Gradio before any decoding: a phone photo
# fits, and the model sees 32 x 32 pixels, so a larger file adds nothing.
# Inline images (data: URLs) are held to the same cap by demo/inputs.py, also
# before decoding. edge.preprocess separately refuses images above its pixel
# limit, which a small file can declare (a decompression bomb).
MAX_FILE_SIZE = inputs.MAX_FILE_SIZE

# Gradio's upload cache is emptied of files older than a day, checked every hour
# (delete_cache=(frequency, age) in seconds): a visitor's photo is needed only for
# the request it came with, and a public Space must not fill its disk.
DELETE_CACHE = (3600, 86400)

# Requests served at once. Each interpreter is guarded by its own lock inside
# edge.runtime.Classifier (an interpreter is not thread-safe), and a request
# runs the int8 then the float32 interpreter: with 2 workers, one request can
# be in the int8 model while the other is in float32 or decoding its photo, which
# keeps the 2 vCPUs of a free Space busy. More workers would only wait on the
# two locks while holding decoded photos in memory. Measured in docs/demo.md.
CONCURRENCY_LIMIT = 2
QUEUE_MAX_SIZE = 64  # requests waiting beyond this get "queue full" rather than minutes of waiting.


# -- requests -----------------------------------------------------------------------


def _user_error(message: str, title: str = "Cannot read this image") -> gr.Error:
    """An error the visitor caused: shown on the page, not logged as a server traceback."""
    return gr.Error(message, title=title, print_exception=False)


def _image_source(payload: Any, max_bytes: int | None = None) -> tuple[Any, str]:
    """(what edge.preprocess reads, the name to show) from the raw Gradio image payload.

    The image events run with `preprocess=False`, so that Gradio does not open
    the file with Pillow itself (its errors would reach the visitor as a bare
    "Error"); every decoding problem then goes through edge.preprocess, whose
    ImageError says what is wrong. The payload is checked by demo/inputs.py
    first: a file inside Gradio's upload folder, or inline data within
    `max_bytes` (default MAX_FILE_SIZE); anything else is refused.
    """
    if payload is None or payload == "":
        raise _user_error("No image: upload a photo, take one with the webcam, or paste one.", "No image")
    try:
        return inputs.image_source(payload, max_bytes if max_bytes is not None else inputs.default_max_bytes())
    except inputs.RefusedInput as error:
        raise _user_error(str(error), "Image refused") from None


def _prepare(source: Any, name: str, size: tuple[int, int]):
    """The model's uint8 input from the upload, or a gr.Error with edge.preprocess's reason.

    The same call as edge.runtime.Classifier.classify and the Pi camera make, so the
    page sees the numbers the other consumers see. The server keeps serving.
    """
    try:
        return preprocess.prepare_image(source, size)
    except preprocess.ImageError as error:
        # The reason, under the visitor's file name: the server's cache path means nothing to them.
        raise _user_error(f"{name}: {error.reason}") from None


def _classify(classifier: runtime.Classifier, pixels) -> tuple[dict[str, float], float]:
    """Top-k {label: probability} and the milliseconds of the interpreter call."""
    start = time.perf_counter()
    probabilities = classifier.predict(pixels)[0]
    elapsed_ms = (time.perf_counter() - start) * 1000.0
    return dict(classifier.top_k(probabilities, TOP_K)), elapsed_ms


MaxBytes = Callable[[], "int | None"]  # the byte cap of inline images, read at each request


def make_predict(models: DemoModels, max_bytes: MaxBytes = inputs.default_max_bytes):
    """The /predict endpoint: an image file in, {label: probability} of the int8 model's top 5 out."""

    def predict(image):
        source, name = _image_source(image, max_bytes())
        return _classify(models.model, _prepare(source, name, models.model.input_size))[0]

    return predict


def make_compare(models: DemoModels, max_bytes: MaxBytes = inputs.default_max_bytes):
    """The page's handler: both models on one photo, the latency, which model answered."""

    def compare(image):
        if image is None:  # The visitor cleared the picture: clear the answers, no error.
            return None, None, ""
        start = time.perf_counter()
        source, name = _image_source(image, max_bytes())
        pixels = _prepare(source, name, models.model.input_size)
        prepare_ms = (time.perf_counter() - start) * 1000.0
        answer, model_ms = _classify(models.model, pixels)
        reference_answer, reference_ms = None, None
        if models.reference is not None:
            reference_pixels = (
                pixels
                if models.reference.input_size == models.model.input_size
                else _prepare(source, name, models.reference.input_size)
            )
            reference_answer, reference_ms = _classify(models.reference, reference_pixels)
        total_ms = (time.perf_counter() - start) * 1000.0
        return (
            answer,
            reference_answer,
            _describe_request(
                models,
                answer,
                reference_answer,
                prepare_ms=prepare_ms,
                model_ms=model_ms,
                reference_ms=reference_ms,
                total_ms=total_ms,
            ),
        )

    return compare


def _describe_request(
    models: DemoModels,
    answer: dict,
    reference_answer: dict | None,
    *,
    prepare_ms: float,
    model_ms: float,
    reference_ms: float | None,
    total_ms: float,
) -> str:
    """The details under the answers: which model answered, the timings (keyword-only, so that four
    milliseconds cannot be swapped), and how far the two models agree."""
    top = next(iter(answer))
    variant = run_folder.variant_of(models.files.model)
    lines = [
        f"**Answered by** `{models.files.model.name}` ({_model_summary(models.model)}).",
        f"**Latency:** {model_ms:.1f} ms in the {variant} model"
        + (f", {reference_ms:.1f} ms in float32" if reference_ms is not None else "")
        + f"; {total_ms:.1f} ms for the whole request on the server, of which {prepare_ms:.1f} ms "
        "decoding and shrinking the photo.",
    ]
    if reference_answer is not None:
        reference_top = next(iter(reference_answer))
        shared = [label for label in answer if label in reference_answer]
        agreement = (
            f"Both models say **{top}**"
            if top == reference_top
            else f"They disagree: {variant} says **{top}**, float32 says **{reference_top}**"
        )
        gap = abs(answer[top] - reference_answer.get(top, 0.0))
        lines.append(
            f"{agreement}; {len(shared)} of the top {TOP_K} labels are shared; "
            f"the probability of **{top}** differs by {gap * 100:.1f} points."
        )
    return "\n\n".join(lines)


def _model_summary(classifier: runtime.Classifier) -> str:
    height, width = classifier.input_size
    size = classifier.model_path.stat().st_size
    return (
        f"{formatting.size(size)}, {classifier.input_dtype} input {height}x{width}, "
        f"{len(classifier.labels)} classes, {classifier.runtime_name} {classifier.runtime_version or ''}"
    ).strip()


# -- what Gradio may serve --------------------------------------------------------


def allowed_paths(models: DemoModels) -> list[str]:
    """What Gradio may serve besides uploads: the report's images, one by one (not the run's other files)."""
    return [str(path) for path in panels.report_images(models.files.report)] if models.files.report else []


# -- the page ---------------------------------------------------------------------


def build_demo(
    models: DemoModels,
    report_url: str | None = None,
    concurrency_limit: int = CONCURRENCY_LIMIT,
    max_file_size: str | int = MAX_FILE_SIZE,
) -> gr.Blocks:
    """The Blocks app: one page, the /predict and /compare endpoints, the queue configured.

    `max_file_size` caps uploads and inline images alike; `launch` hands it to Gradio
    (kept on the Blocks as `max_file_size`, the attribute Gradio's launch sets).
    """
    variant = run_folder.variant_of(models.files.model)
    title = f"CIFAR edge classifier: {models.metadata.get('dataset', 'image')} classes, {variant} TFLite"
    byte_limit = inputs.byte_count(max_file_size)

    def max_bytes() -> int | None:  # what every handler holds inline images to
        return byte_limit

    # No telemetry from the demo or the Space: a visitor's request reaches this server only.
    with gr.Blocks(title=title, delete_cache=DELETE_CACHE, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {title}\n"
            f"Drop in a photo: the {variant} model that also runs on a Raspberry Pi answers, "
            "and the float32 model answers the same photo beside it, so you see what quantization costs."
        )
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(
                    label="Photo",
                    sources=["upload", "webcam", "clipboard"],
                    type="filepath",
                    image_mode=None,
                    height=320,
                    elem_id="photo",
                )
                classify_button = gr.Button("Classify", variant="primary", elem_id="classify")
                examples = panels.example_images(models.model.labels)
                if examples:
                    gr.Examples(examples=[[str(path)] for path in examples], inputs=[image], label="Examples")
            with gr.Column(scale=1):
                answer = gr.Label(
                    label=f"{variant} (served model): top {TOP_K}", num_top_classes=TOP_K, elem_id="answer"
                )
                reference_answer = gr.Label(
                    label=f"float32: top {TOP_K}",
                    num_top_classes=TOP_K,
                    visible=models.reference is not None,
                    elem_id="reference-answer",
                )
            with gr.Column(scale=1):  # "Where it looked": the occlusion map, filled in after the answer.
                where = gr.Image(label="Where it looked", type="pil", interactive=False, height=320, elem_id="where")
                where_caption = gr.Markdown(elem_id="where-caption")
        details = gr.Markdown(elem_id="details")
        live.add_live_section(
            demo, models.model, TOP_K, max_bytes
        )  # the webcam stream to the served model (demo/live.py)
        with gr.Accordion("Float vs int8 on the test set", open=True):
            gr.Markdown(panels.quantization_markdown(models))
        with gr.Accordion("About this model", open=False):
            gr.Markdown(panels.about_markdown(models, report_url))
        report = panels.report_markdown(models)
        if report:
            with gr.Accordion("Full report", open=False):
                gr.Markdown(report)

        # preprocess=False: the handlers decode the upload themselves (see _image_source).
        gr.on(
            triggers=[classify_button.click, image.change],
            fn=make_compare(models, max_bytes),
            inputs=[image],
            outputs=[answer, reference_answer, details],
            api_name="compare",
            preprocess=False,
            concurrency_limit=concurrency_limit,
            concurrency_id="models",
        ).success(
            explain.make_explain(models, lambda payload: _image_source(payload, max_bytes())),
            inputs=[image],
            outputs=[where, where_caption],
            api_name="explain",
            preprocess=False,
            concurrency_limit=concurrency_limit,
            concurrency_id="models",
        )
        # The API endpoint has no trigger on the page: clients call it by name.
        gr.on(
            triggers=[],
            fn=make_predict(models, max_bytes),
            inputs=[image],
            outputs=[answer],
            api_name="predict",
            preprocess=False,
            concurrency_limit=concurrency_limit,
            concurrency_id="models",
            show_progress="hidden",
        )
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=concurrency_limit)
    demo.max_file_size = byte_limit
    return demo


def launch(
    demo: gr.Blocks,
    models: DemoModels,
    server_port: int | None = None,
    server_name: str | None = None,
    share: bool = False,
    prevent_thread_lock: bool = False,
):
    """Start the server. server_port/server_name None: Gradio reads GRADIO_SERVER_PORT/NAME, else 7860/127.0.0.1.

    The upload cap is build_demo's, the one the handlers hold inline images to.
    show_error=False: the visitor sees the demo's own messages (gr.Error, always shown) and
    nothing of any other exception. Gradio's refusal of a FileData path outside its uploads
    names the server's absolute path (and so its working directory); it reaches the caller
    as a bare error instead.
    Every request body is bounded by the same cap (demo/body_limit.py): an oversized one is
    refused with 413 before Gradio reads it.
    """
    middleware = [body_limit.middleware(demo.max_file_size)] if demo.max_file_size is not None else []
    return demo.launch(
        server_port=server_port,
        server_name=server_name,
        share=share,
        app_kwargs={"middleware": middleware},
        max_file_size=demo.max_file_size,
        allowed_paths=allowed_paths(models),
        prevent_thread_lock=prevent_thread_lock,
        show_error=False,
        ssr_mode=False,
        theme=gr.themes.Soft(),
    )
