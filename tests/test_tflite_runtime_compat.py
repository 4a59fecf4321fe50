"""The int8 model gives the same top-1 in tflite-runtime 2.14 as in ai-edge-litert.

tflite-runtime exists only for Python <= 3.11 and was built against numpy 1.x,
so it cannot share the main environment (numpy 2). It lives in its own venv,
whose Python this test runs `edge.runtime.Classifier(runtime="tflite-runtime")`
in; the same images go through ai-edge-litert here, and the answers are compared.

    python3.11 -m venv .venv-tflite
    .venv-tflite/bin/pip install "tflite-runtime==2.14.*" "numpy<2" "Pillow>=10,<13"
    TFLITE_RUNTIME_PYTHON=.venv-tflite/bin/python pytest tests/test_tflite_runtime_compat.py -q

Compares the tiny trained colour models of tests/test_runtime.py and, when
tests/conftest.py provides it, the `smoke_run` fixture's exported models.
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

# Two runtimes round int8 arithmetic differently (different kernel builds: LiteRT's
# XNNPACK against tflite-runtime 2.14's reference kernels), and the differences add
# up through the layers: on the smoke run's SE-CNN (BatchNorm folded, sigmoid gates)
# probabilities differed by up to 4 output steps (4/256) on 17 of 640 values.
# So probabilities may differ by this many steps, and a top-1 whose margin over the
# runner-up is within twice that may legitimately flip.
STEPS_TOLERATED = 4
# Float32 models: the two kernel builds may sum in a different order.
FLOAT_TOLERANCE = 1e-5
# Dynamic-range models quantize activations on the fly, each runtime in its own hybrid
# kernels: on the smoke run's SE-CNN probabilities differed by up to 8.7e-4.
DYNAMIC_RANGE_TOLERANCE = 2e-3

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
        pytest.skip(
            f"{PYTHON_VARIABLE} is not set: point it at a Python with tflite-runtime 2.14 and numpy<2 "
            "(see this file's docstring)"
        )
    python = Path(value).absolute()  # not resolve(): a venv's python is a symlink to the base one
    if not python.is_file():
        pytest.fail(f"{PYTHON_VARIABLE}={value}: no such file")
    return python


@pytest.fixture(scope="module")
def cases(request, tmp_path_factory) -> list[dict]:
    """What to compare: {"models": [int8 first, ...], "images": uint8 batch, "trained": bool} per source.

    The tiny colour models of tests/test_runtime.py are trained to clear answers, so their top-1
    comparison always means something. The smoke run's models are the converter's real output;
    when tests/conftest.py provides `smoke_run`, they are compared on its own test images too.
    """
    import test_runtime  # tests/ is on sys.path under pytest's default import mode

    paths = test_runtime.build_tiny_models(tmp_path_factory.mktemp("compat_models"))
    colour_images, _ = test_runtime.colour_images(32, seed=3)
    found = [{"models": [paths["int8"], paths["float32"]], "images": colour_images, "trained": True}]
    try:
        run = Path(request.getfixturevalue("smoke_run"))
    except pytest.FixtureLookupError:
        return found
    from train import config, data

    splits = data.load_splits(config.TrainConfig.from_run(run))
    folder = run / "tflite"
    size = runtime.Classifier(folder / "model_int8.tflite").input_size
    images = np.stack([preprocess.prepare_image(image, size) for image in splits.test_images[:64]])
    # Every variant the converter ships must load in the old runtime, not only int8.
    variants = ("int8", "float32", "float16", "dynamic")
    found.append(
        {"models": [folder / f"model_{variant}.tflite" for variant in variants], "images": images, "trained": False}
    )
    return found


def run_in_tflite_runtime(python: Path, models: list[Path], images: np.ndarray, folder: Path) -> dict:
    np.save(folder / "images.npy", images)
    image_file = folder / "first.png"
    Image.fromarray(images[0]).save(image_file)
    completed = subprocess.run(
        [str(python), "-c", COMPAT_SCRIPT, str(folder / "images.npy"), str(image_file)]
        + [str(model) for model in models],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(REPOSITORY)),
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_int8_top1_matches_litert(runtime_python, cases, tmp_path, record_property):
    if "litert" not in runtime.available_runtimes():
        pytest.skip("ai-edge-litert is not installed here, nothing to compare with")
    for number, case in enumerate(cases):
        folder = tmp_path / str(number)
        folder.mkdir()
        report = run_in_tflite_runtime(runtime_python, case["models"], case["images"], folder)
        record_property(
            "tflite_runtime_environment", {key: report[key] for key in ("python", "numpy", "tflite_runtime")}
        )
        assert report["tflite_runtime"] is not None and not report["tensorflow_imported"]
        for model in case["models"]:
            litert = runtime.Classifier(model, runtime="litert")
            expected = litert.predict(case["images"])
            other = np.asarray(report["results"][str(model)]["probabilities"], np.float32)
            scale = litert.output_quantization[0]
            if scale:
                tolerance = STEPS_TOLERATED * scale
            else:
                tolerance = DYNAMIC_RANGE_TOLERANCE if "dynamic" in Path(model).name else FLOAT_TOLERANCE
            np.testing.assert_allclose(other, expected, atol=tolerance + 1e-7, err_msg=str(model))
            ordered = np.sort(expected, axis=1)
            clear = ordered[:, -1] - ordered[:, -2] > 2 * tolerance  # both may move by `tolerance`
            if case["trained"]:
                assert clear.sum() >= len(clear) // 2, f"{model}: too few images with a clear top-1 to compare"
            np.testing.assert_array_equal(other.argmax(axis=1)[clear], expected.argmax(axis=1)[clear])
            if clear[0]:  # the same answer through a file, decoded by each environment's Pillow
                assert (
                    report["results"][str(model)]["file_top1"] == litert.classify(folder / "first.png", top_k=1)[0][0]
                )
