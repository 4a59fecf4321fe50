"""The demo's "Where it looked" panel: the occlusion map of a still photo, drawn over it.

    from demo import explain, models
    from edge.common import run_folder
    served = models.load_models(run_folder.find_model_files(folder="runs/NAME"))
    overlay, caption = explain.where_it_looked(served, "photo.jpg")

The map is `edge.occlusion.occlusion_map` computed with the served model (the
int8 TFLite file, through edge.runtime), so the Space needs no TensorFlow: the
photo and its 49 greyed copies go through the interpreter as one batch.
demo/ui.py runs it after the answer is shown, so the top-5 never waits for it.

Imports gradio, numpy, Pillow and edge/ only; not demo/ui.py (which imports this).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gradio as gr
from PIL import Image

from edge import occlusion, preprocess


def where_it_looked(models: Any, source: preprocess.ImageSource) -> tuple[Image.Image, str]:
    """(the heat overlay beside the photo, a one-line caption) for one image.

    `models` is demo/models.py's DemoModels (its `model` classifier answers);
    `source` is anything `prepare_image` reads, usually a path. Bad images
    raise preprocess.ImageError.
    """
    classifier = models.model
    start = time.perf_counter()
    pixels = preprocess.prepare_image(source, classifier.input_size)
    result = occlusion.occlusion_map(pixels, classifier.predict)
    # The same crop as the model's input, at display size: the heat lines up with what the model saw.
    background = preprocess.prepare_image(source, occlusion.DISPLAY_SIZE)
    overlay = result.overlay(background)
    elapsed_ms = (time.perf_counter() - start) * 1000.0
    return overlay, caption(result, classifier.labels[result.target], elapsed_ms)


def caption(result: occlusion.OcclusionMap, label: str, elapsed_ms: float) -> str:
    """One line: the class, how much greying the hottest window costs it, and what the map cost."""
    height, width = result.input_size
    return (
        f"Bright = greying that part lowers **{label}** ({result.base_probability:.1%}) the most: "
        f"by up to {result.max_drop * 100:.1f} points. {occlusion.GRID}x{occlusion.GRID} windows of "
        f"{result.window[0]}x{result.window[1]} pixels on the {height}x{width} input, {result.images} images "
        f"in {result.calls} model call{'s' if result.calls != 1 else ''}, {elapsed_ms:.0f} ms."
    )


def make_explain(models: Any, read_payload: Callable[[Any], tuple[Any, str]]):
    """The page's handler: a Gradio image payload in, (overlay, caption) out; a cleared photo clears both.

    `read_payload` turns the payload into (image source, name to show): demo/ui.py's `_image_source`,
    passed in so that this module does not import ui (ui imports this one).
    """

    def explain(image):
        if image is None:
            return None, ""
        source, name = read_payload(image)
        try:
            return where_it_looked(models, source)
        except preprocess.ImageError as error:
            raise gr.Error(f"{name}: {error.reason}", title="Cannot read this image", print_exception=False) from None

    return explain
