"""Tests for edge/occlusion.py: the occlusion-sensitivity map ("Where it looked").

    pytest tests/test_occlusion.py -q -m "not slow"

The models here are numpy functions built for the test, so the right answer is
known without training: one looks only at the top-left quadrant of the image.
The int8 test goes through edge.runtime.Classifier on tests/test_runtime.py's
tiny converted models (slow: it trains and converts them once per session).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_runtime import build_tiny_models, colour_images  # pytest puts tests/ on sys.path

from edge import occlusion, preprocess, runtime

SIZE = 32
QUADRANT = SIZE // 2
# A numpy model gives the same float64 numbers however its batch is cut.
EXACT = 1e-12


def quadrant_model(batch: np.ndarray) -> np.ndarray:
    """Two classes; P(class 1) rises with the brightness of the top-left quadrant alone."""
    brightness = batch[:, :QUADRANT, :QUADRANT, :].astype(np.float64).mean(axis=(1, 2, 3))
    bright = 1.0 / (1.0 + np.exp(-(brightness - 230.0) / 10.0))
    return np.stack([1.0 - bright, bright], axis=1)


def quadrant_image(seed: int = 0) -> np.ndarray:
    """Random pixels, with a white top-left quadrant (the informative region)."""
    image = np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    image[:QUADRANT, :QUADRANT] = 255
    return image


class CountingModel:
    """A predict function that records the batch sizes it was called with."""

    def __init__(self, function):
        self.function, self.batch_sizes = function, []

    def __call__(self, batch):
        self.batch_sizes.append(len(batch))
        return self.function(batch)


def test_the_informative_quadrant_shows_up():
    result = occlusion.occlusion_map(quadrant_image(), quadrant_model)
    assert result.target == 1 and result.base_probability > 0.9
    assert result.drops.shape == (occlusion.GRID, occlusion.GRID)
    # A 32-pixel side: 8-pixel windows starting every 4 pixels, the last one ending at the edge.
    assert result.window == (8, 8) and result.row_starts == (0, 4, 8, 12, 16, 20, 24) == result.column_starts
    touches_quadrant = np.array([start < QUADRANT for start in result.row_starts])
    inside = np.outer(touches_quadrant, touches_quadrant)
    assert np.all(np.abs(result.drops[~inside]) < EXACT), "a window outside the quadrant changed the answer"
    assert np.all(result.drops[inside] > 0.01)  # even the corner window, 16 pixels of the quadrant
    # The largest drops come from the windows lying wholly inside the quadrant (starts 0, 4, 8).
    strongest = np.unravel_index(np.argsort(-result.drops, axis=None)[:9], result.drops.shape)
    assert set(zip(*strongest)) == {(i, j) for i in range(3) for j in range(3)}
    pixels = result.pixel_map()
    assert pixels.shape == (SIZE, SIZE)
    assert pixels[:QUADRANT, :QUADRANT].min() > 0 and np.all(np.abs(pixels[QUADRANT + 4 :, :]) < EXACT)


def test_the_map_is_deterministic():
    first = occlusion.occlusion_map(quadrant_image(), quadrant_model)
    second = occlusion.occlusion_map(quadrant_image(), quadrant_model)
    assert np.array_equal(first.drops, second.drops) and first.base_probability == second.base_probability
    assert np.array_equal(np.asarray(first.overlay(quadrant_image())), np.asarray(second.overlay(quadrant_image())))


def test_batched_equals_one_image_at_a_time():
    batched, single = CountingModel(quadrant_model), CountingModel(quadrant_model)
    together = occlusion.occlusion_map(quadrant_image(3), batched)
    one_by_one = occlusion.occlusion_map(quadrant_image(3), single, batch_size=1)
    # The original and its 49 copies fit one batch of the runtime's size: one call, one invocation.
    assert batched.batch_sizes == [1 + occlusion.GRID**2] and together.calls == 1
    assert together.images == 1 + occlusion.GRID**2 <= runtime.MAX_BATCH
    assert single.batch_sizes == [1] * together.images and one_by_one.calls == together.images
    np.testing.assert_allclose(together.drops, one_by_one.drops, rtol=0, atol=EXACT)


def test_occluded_windows_are_filled_with_the_preprocessing_grey():
    image = quadrant_image()
    copies, window, rows, columns = occlusion.occluded_copies(image)
    assert copies.shape == (occlusion.GRID**2, SIZE, SIZE, 3)
    last = copies[-1]
    assert np.all(last[rows[-1] :, columns[-1] :] == preprocess.NEUTRAL_BACKGROUND)
    assert np.array_equal(last[: rows[-1], :], image[: rows[-1], :])
    assert np.array_equal(image, quadrant_image()), "the caller's image was modified"


def test_an_explicit_target_and_other_input_sizes():
    image = np.zeros((48, 64, 3), np.uint8)
    image[:24, :32] = 255
    result = occlusion.occlusion_map(image, lambda batch: quadrant_model(batch), target=0)
    assert result.target == 0 and result.window == (12, 16)
    assert result.row_starts[-1] + result.window[0] == 48 and result.column_starts[-1] + result.window[1] == 64
    overlay = result.overlay(image, size=96)
    assert overlay.size == (128, 96) and overlay.mode == "RGB"  # (width, height): the input's aspect


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="uint8"):
        occlusion.occlusion_map(quadrant_image().astype(np.float32), quadrant_model)
    with pytest.raises(ValueError, match="at least"):
        occlusion.occlusion_map(np.zeros((4, 4, 3), np.uint8), quadrant_model)
    with pytest.raises(ValueError, match="outside"):
        occlusion.occlusion_map(quadrant_image(), quadrant_model, target=2)
    with pytest.raises(ValueError, match="expected"):
        occlusion.occlusion_map(quadrant_image(), lambda batch: quadrant_model(batch)[:1])


def test_the_overlay_has_the_requested_size_and_mode():
    result = occlusion.occlusion_map(quadrant_image(), quadrant_model)
    background = preprocess.prepare_image(Image.fromarray(quadrant_image()), 200)
    for overlay in (
        result.overlay(background, size=200),
        result.overlay(Image.fromarray(background), size=200),
        result.overlay(size=200),
    ):
        assert isinstance(overlay, Image.Image) and overlay.size == (200, 200) and overlay.mode == "RGB"
    heat = np.asarray(result.overlay(size=200)).astype(int)
    # Hot (bright, yellow) where the quadrant was, the colormap's black far from it.
    assert heat[:80, :80].sum(axis=2).mean() > 3 * heat[150:, 150:].sum(axis=2).mean()
    assert np.array_equal(heat[-1, -1], occlusion.colormap(np.array(0.0)))


def test_a_map_where_nothing_matters_stays_dark():
    flat = occlusion.occlusion_map(quadrant_image(), lambda batch: np.tile([0.3, 0.7], (len(batch), 1)))
    assert flat.max_drop == 0.0
    assert np.array_equal(
        np.unique(np.asarray(flat.overlay(size=32)).reshape(-1, 3), axis=0), occlusion.colormap(np.array([0.0]))
    )


def test_colormap_runs_from_dark_to_bright():
    colours = occlusion.colormap(np.linspace(0, 1, 11)).astype(int)
    assert colours.shape == (11, 3) and colours.dtype == np.int64
    brightness = colours.sum(axis=1)
    assert np.all(np.diff(brightness) > 0)
    assert np.array_equal(occlusion.colormap(np.array([-1.0, 2.0])), occlusion.colormap(np.array([0.0, 1.0])))


@pytest.fixture(scope="module")
def tiny_int8_model(tmp_path_factory) -> Path:
    """tests/test_runtime.py's tiny colour classifier, converted to full int8 (trains for a few seconds)."""
    pytest.importorskip("tensorflow")
    return build_tiny_models(tmp_path_factory.mktemp("occlusion_tiny_models"))["int8"]


@pytest.mark.slow
def test_an_int8_tflite_model_through_the_runtime(tiny_int8_model):
    """The real path of the demo: a quantized model in edge.runtime.Classifier, one invocation per map."""
    classifier = runtime.Classifier(tiny_int8_model)
    invocations = []
    original_invoke = classifier.interpreter.invoke
    classifier.interpreter.invoke = lambda: invocations.append(1) or original_invoke()
    image = colour_images(1, seed=4)[0][0]
    result = occlusion.occlusion_map(image, classifier.predict)
    assert len(invocations) == 1 and result.calls == 1
    assert result.target == int(np.argmax(classifier.predict(image)[0]))
    again = occlusion.occlusion_map(image, classifier.predict)
    assert np.array_equal(result.drops, again.drops)
    one_by_one = occlusion.occlusion_map(image, classifier.predict, batch_size=1)
    # int8 kernels are exact integer arithmetic: a batch gives the same numbers as single images.
    np.testing.assert_allclose(result.drops, one_by_one.drops, atol=classifier.output_quantization[0] + 1e-6)


@pytest.mark.slow
def test_the_benchmark_counts_one_invocation_per_map(tiny_int8_model, tmp_path, capsys, load_benchmark):
    benchmark = load_benchmark("occlusion_cost")
    output = tmp_path / "cost.json"
    assert (
        benchmark.main(["--model", str(tiny_int8_model), "--threads", "1", "2", "--runs", "2", "--json", str(output)])
        == 0
    )
    assert "| 1 |" in capsys.readouterr().out
    rows = json.loads(output.read_text())["results"]
    assert [row["threads"] for row in rows] == [1, 2]
    for row in rows:
        assert row["invocations_per_map"] == 1 and row["images_per_map"] == 1 + occlusion.GRID**2
        assert row["map_ms"] > 0 and row["single_image_ms"] > 0
    assert benchmark.main(["--model", str(tmp_path / "none.tflite")]) == 2
    assert "model file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_status:  # argparse's usage error
        benchmark.main(["--model", str(tiny_int8_model), "--threads", "two"])
    assert exit_status.value.code == 2 and "whole numbers" in capsys.readouterr().err
