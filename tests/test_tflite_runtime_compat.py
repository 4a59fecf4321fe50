"""The int8 model gives the same top-1 in tflite-runtime 2.14 as in ai-edge-litert.

tflite-runtime exists only for Python <= 3.11 and was built against numpy 1.x,
so it cannot share the main environment (numpy 2). It lives in its own venv,
whose Python this test runs `edge.runtime.Classifier(runtime="tflite-runtime")`
in; the same images go through ai-edge-litert here, and the answers are compared.

    python3.11 -m venv .venv-tflite
    .venv-tflite/bin/pip install "tflite-runtime==2.14.*" "numpy<2" "Pillow>=10,<13"
    TFLITE_RUNTIME_PYTHON=.venv-tflite/bin/python pytest tests/test_tflite_runtime_compat.py -q

Uses the `smoke_run` fixture's exported models when tests/conftest.py provides
it, else the tiny colour models of tests/test_runtime.py.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge import preprocess, runtime

pytestmark = pytest.mark.slow  # converts (or trains) a model and starts a second interpreter

REPOSITORY = Path(__file__).resolve().parents[1]
PYTHON_VARIABLE = "TFLITE_RUNTIME_PYTHON"

# Two runtimes may round one int8 step differently (different kernel builds), so
# probabilities may differ by one output quantization step, and a top-1 whose
# margin over the runner-up is within that step may legitimately flip.
STEPS_TOLERATED = 1
# Float32 models: the two kernel builds may sum in a different order.
FLOAT_TOLERANCE = 1e-5

COMPAT_SCRIPT = """
import json, sys
import numpy
from edge import runtime
images = numpy.load(sys.argv[1])
image_file = sys.argv[2]
results = {}
for model in sys.argv[3:]:
    classifier = runtime.Classifier(model, runtime="tflite-runtime")
    results[model] = {"probabilities": classifier.predict(images).tolist(),
                      "file_top1": classifier.classify(image_file, top_k=1)[0][0]}
print(json.dumps({"python": sys.version.split()[0], "numpy": numpy.__version__,
                  "tflite_runtime": runtime.runtime_version("tflite-runtime"),
                  "tensorflow_imported": "tensorflow" in sys.modules, "results": results}))
"""


@pytest.fixture(scope="module")
def runtime_python() -> Path:
    value = os.environ.get(PYTHON_VARIABLE)
    if not value:
        pytest.skip(f"{PYTHON_VARIABLE} is not set: point it at a Python with tflite-runtime 2.14 and numpy<2 "
                    "(see this file's docstring)")
    python = Path(value).absolute()  # not resolve(): a venv's python is a symlink to the base one
    if not python.is_file():
        pytest.fail(f"{PYTHON_VARIABLE}={value}: no such file")
    return python


@pytest.fixture(scope="module")
def models_and_images(request, tmp_path_factory) -> tuple[list[Path], np.ndarray]:
    """(the int8 model first, then float32; uint8 test images at the models' input size)."""
    try:
        run = request.getfixturevalue("smoke_run")
    except pytest.FixtureLookupError:
        run = None
    if run is not None:
        folder = Path(run) / "tflite"
        models = [folder / "model_int8.tflite", folder / "model_float32.tflite"]
    else:
        import test_runtime  # tests/ is on sys.path under pytest's default import mode
        paths = test_runtime.build_tiny_models(tmp_path_factory.mktemp("compat_models"))
        models = [paths["int8"], paths["float32"]]
    size = runtime.Classifier(models[0]).input_size
    # Colour blocks and noise at a larger size, through the shared preprocessing, as photos would be.
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((96, 96)) for _ in range(24)]
    pictures += [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(8)]
    images = np.stack([preprocess.prepare_image(picture, size) for picture in pictures])
    return models, images


def test_int8_top1_matches_litert(runtime_python, models_and_images, tmp_path, record_property):
    if "litert" not in runtime.available_runtimes():
        pytest.skip("ai-edge-litert is not installed here, nothing to compare with")
    models, images = models_and_images
    np.save(tmp_path / "images.npy", images)
    image_file = tmp_path / "first.png"
    Image.fromarray(images[0]).save(image_file)
    completed = subprocess.run(
        [str(runtime_python), "-c", COMPAT_SCRIPT, str(tmp_path / "images.npy"), str(image_file)]
        + [str(model) for model in models],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env=dict(os.environ, PYTHONPATH=str(REPOSITORY)))
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    record_property("tflite_runtime_environment", {key: report[key] for key in ("python", "numpy", "tflite_runtime")})
    assert report["tflite_runtime"] is not None and not report["tensorflow_imported"]

    for model in models:
        litert = runtime.Classifier(model, runtime="litert")
        expected = litert.predict(images)
        other = np.asarray(report["results"][str(model)]["probabilities"], np.float32)
        scale = litert.output_quantization[0]
        tolerance = STEPS_TOLERATED * scale if scale else FLOAT_TOLERANCE
        np.testing.assert_allclose(other, expected, atol=tolerance + 1e-7, err_msg=str(model))
        ordered = np.sort(expected, axis=1)
        clear = ordered[:, -1] - ordered[:, -2] > tolerance  # top-1 not within a rounding step of the next
        assert clear.sum() >= len(images) // 2, f"{model}: too few images with a clear top-1 to compare"
        np.testing.assert_array_equal(other.argmax(axis=1)[clear], expected.argmax(axis=1)[clear])
        if clear[0]:  # the same answer through a file, decoded by each environment's Pillow
            assert report["results"][str(model)]["file_top1"] == litert.classify(image_file, top_k=1)[0][0]
