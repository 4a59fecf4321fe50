"""Tests for edge/runtime.py: the TensorFlow-free classifier over .tflite files.

A session fixture trains a tiny colour classifier with Keras (uint8 input ->
Rescaling -> Conv2D -> pooling -> softmax, the project's model contract) and
converts it with the TFLite converter: float32, full int8 with a raw uint8
input (scale 0, a Cast in the graph), and two variants with quantized uint8 and
int8 inputs. Tests may import TensorFlow; the check that the runtime does not
runs in a fresh interpreter.
    pytest tests/test_runtime.py -q
"""

from __future__ import annotations

import ctypes.util
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge import classify, preprocess, runtime
from edge.common import artifacts, run_folder

pytestmark = pytest.mark.slow  # trains and converts a (tiny) model once per session

REPOSITORY = Path(__file__).resolve().parents[1]
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "white": (235, 235, 235),
    "black": (20, 20, 20),
}
LABELS = list(COLOURS)
INPUT_SIZE = 32

# Float kernels may order sums differently for a batch than for one image.
FLOAT_TOLERANCE = 1e-5
# The quantized variants all see the same calibration data, so they agree to the last step.
VARIANTS = ["float32", "int8", "uint8_input", "int8_input"]


def colour_images(count: int, seed: int, size: int = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Noisy solid-colour images, uint8 (count, size, size, 3), and their class indices."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, len(LABELS), count)
    base = np.array([COLOURS[LABELS[index]] for index in classes], np.float32)[:, None, None, :]
    noise = rng.normal(0, 20, (count, size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8), classes


def build_tiny_models(folder: Path) -> dict[str, Path]:
    """Train the colour classifier briefly and write every test variant into `folder` with labels.txt.

    Returns {variant: path}; "not_image" is a model over a flat vector, in its own folder.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)

    def network(input_dtype: str) -> keras.Model:
        inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), dtype=input_dtype)
        features = keras.layers.Rescaling(1 / 255)(inputs)
        features = keras.layers.Conv2D(8, 3, activation="relu")(features)
        features = keras.layers.GlobalAveragePooling2D()(features)
        outputs = keras.layers.Dense(len(LABELS), activation="softmax")(features)
        return keras.Model(inputs, outputs)

    images, classes = colour_images(400, seed=0)
    model = network("uint8")
    model.compile(optimizer=keras.optimizers.Adam(0.03), loss="sparse_categorical_crossentropy")
    model.fit(images, classes, epochs=15, batch_size=50, verbose=0)
    float_input_model = network("float32")  # same weights; lets the converter quantize the input itself
    float_input_model.set_weights(model.get_weights())

    calibration, _ = colour_images(50, seed=1)

    def representative(dtype):
        def generate():
            for image in calibration:
                yield [image[np.newaxis].astype(dtype)]

        return generate

    def convert(keras_model, quantize=None, input_dtype=None, output_dtype=None, calibration_dtype=np.float32):
        converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative(calibration_dtype)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = input_dtype
            converter.inference_output_type = output_dtype
        return converter.convert()

    folder.mkdir(parents=True, exist_ok=True)
    contents = {
        "float32": convert(model),
        "int8": convert(model, True, tf.uint8, tf.uint8, np.uint8),
        "uint8_input": convert(float_input_model, True, tf.uint8, tf.uint8),
        "int8_input": convert(float_input_model, True, tf.int8, tf.int8),
    }
    paths = {}
    for variant, content in contents.items():
        paths[variant] = folder / f"model_{variant}.tflite"
        paths[variant].write_bytes(content)
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")

    vector_input = keras.Input((10,))
    vector_model = keras.Model(vector_input, keras.layers.Dense(len(LABELS), activation="softmax")(vector_input))
    paths["not_image"] = folder / "not_image" / "model.tflite"
    paths["not_image"].parent.mkdir()
    paths["not_image"].write_bytes(convert(vector_model))
    (paths["not_image"].parent / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return paths


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("tensorflow")
    return build_tiny_models(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def test_images() -> tuple[np.ndarray, np.ndarray]:
    return colour_images(12, seed=2)


def solid_png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (50, 40), colour).save(buffer, "PNG")
    return buffer.getvalue()


# -- loading and the tensor details ---------------------------------------------------------


@pytest.mark.parametrize(
    "variant, dtype, quantized_input",
    [
        ("float32", np.uint8, False),
        ("int8", np.uint8, False),
        ("uint8_input", np.uint8, True),
        ("int8_input", np.int8, True),
    ],
)
def test_reads_input_details(tiny_models, variant, dtype, quantized_input):
    classifier = runtime.Classifier(tiny_models[variant])
    assert classifier.input_size == (INPUT_SIZE, INPUT_SIZE)
    assert classifier.input_dtype == dtype
    assert (classifier.input_quantization[0] != 0) == quantized_input
    assert classifier.labels == LABELS
    assert classifier.runtime_name in runtime.RUNTIMES
    assert classifier.labels_path == tiny_models[variant].parent / "labels.txt"


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_classifies_colours(tiny_models, variant, test_images):
    classifier = runtime.Classifier(tiny_models[variant])
    images, classes = test_images
    assert (classifier.predict(images).argmax(axis=1) == classes).all()
    for name, colour in COLOURS.items():
        assert classifier.classify(solid_png(colour), top_k=1)[0][0] == name


def test_quantized_inputs_of_both_signs_agree(tiny_models, test_images):
    # Same network and calibration; an int8 input (zero point -128) and a uint8 input (zero point 0)
    # hold the same real values, so a wrong quantization of either would show here.
    images, _ = test_images
    unsigned = runtime.Classifier(tiny_models["uint8_input"]).predict(images)
    signed = runtime.Classifier(tiny_models["int8_input"]).predict(images)
    np.testing.assert_allclose(signed, unsigned, atol=1e-7)


@pytest.mark.parametrize("variant", VARIANTS)
def test_top_k_is_sorted_probabilities(tiny_models, variant, test_images):
    classifier = runtime.Classifier(tiny_models[variant])
    predictions = classifier.classify(test_images[0][0], top_k=3)
    assert len(predictions) == 3 and all(label in LABELS for label, _ in predictions)
    probabilities = [probability for _, probability in predictions]
    assert probabilities == sorted(probabilities, reverse=True)
    everything = classifier.predict(test_images[0])
    assert everything.dtype == np.float32 and everything.shape == (len(test_images[0]), len(LABELS))
    assert (everything >= 0).all()
    scale = classifier.output_quantization[0]
    # Each dequantized probability is off by at most half a step; float ones sum to 1.
    sum_tolerance = len(LABELS) * scale / 2 if scale else FLOAT_TOLERANCE
    assert (everything.sum(axis=1) <= 1 + sum_tolerance).all()
    assert len(classifier.classify(test_images[0][0], top_k=100)) == len(LABELS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_batch_equals_single(tiny_models, variant, test_images, monkeypatch):
    monkeypatch.setattr(runtime, "MAX_BATCH", 5)  # 12 images: chunks of 5, 5 and 2
    classifier = runtime.Classifier(tiny_models[variant])
    images, _ = test_images
    single = np.concatenate([classifier.predict(image) for image in images])
    batched = classifier.predict(images)
    np.testing.assert_allclose(batched, single, atol=FLOAT_TOLERANCE)
    sources = [solid_png(colour) for colour in COLOURS.values()]
    assert classifier.classify_batch(sources, top_k=2) == [classifier.classify(source, top_k=2) for source in sources]
    assert classifier.classify_batch([], top_k=2) == []


def test_thread_count(tiny_models, test_images):
    images, _ = test_images
    one = runtime.Classifier(tiny_models["float32"], threads=1)
    two = runtime.Classifier(tiny_models["float32"], threads=2)
    assert (one.num_threads, two.num_threads) == (1, 2)
    np.testing.assert_allclose(one.predict(images), two.predict(images), atol=FLOAT_TOLERANCE)
    with pytest.raises(ValueError, match="threads"):
        runtime.Classifier(tiny_models["float32"], threads=0)


def test_concurrent_calls_are_serialised(tiny_models, test_images):
    classifier = runtime.Classifier(tiny_models["int8"])
    images, _ = test_images
    expected = classifier.predict(images)
    results, errors = [], []

    def work():
        try:
            for _ in range(5):
                results.append(classifier.predict(images))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    workers = [threading.Thread(target=work) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors and len(results) == 20
    for result in results:
        np.testing.assert_array_equal(result, expected)


# -- runtime choice -------------------------------------------------------------------------


def test_explicit_runtimes(tiny_models, monkeypatch):
    with pytest.raises(runtime.ModelError, match="unknown runtime"):
        runtime.Classifier(tiny_models["int8"], runtime="tensorflow")
    for name in runtime.RUNTIMES:
        if name in runtime.available_runtimes():
            assert runtime.Classifier(tiny_models["int8"], runtime=name).runtime_name == name
        else:
            with pytest.raises(runtime.ModelError, match=f"{name}' is not installed"):
                runtime.Classifier(tiny_models["int8"], runtime=name)


def test_falls_back_to_tflite_runtime(tiny_models, monkeypatch):
    if "litert" not in runtime.available_runtimes():
        pytest.skip("needs ai-edge-litert to stand in for tflite-runtime")
    real_import = runtime.importlib.import_module
    litert = real_import("ai_edge_litert.interpreter")

    def import_without_litert(name, *arguments):
        if name == "ai_edge_litert.interpreter":
            raise ImportError("simulated: not installed")
        if name == "tflite_runtime.interpreter":
            return litert  # same API; stands in for the real package
        return real_import(name, *arguments)

    monkeypatch.setattr(runtime.importlib, "import_module", import_without_litert)
    classifier = runtime.Classifier(tiny_models["int8"])
    assert classifier.runtime_name == "tflite-runtime"
    assert classifier.classify(solid_png(COLOURS["red"]), top_k=1)[0][0] == "red"
    with pytest.raises(runtime.ModelError, match="'litert' is not installed"):
        runtime.Classifier(tiny_models["int8"], runtime="litert")

    def import_nothing(name, *arguments):
        if name in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
            raise ImportError("simulated: not installed")
        return real_import(name, *arguments)

    monkeypatch.setattr(runtime.importlib, "import_module", import_nothing)
    with pytest.raises(runtime.ModelError, match="no TFLite runtime is installed"):
        runtime.Classifier(tiny_models["int8"])


def test_missing_delegate_names_the_library(tiny_models, tmp_path):
    library = tmp_path / "libedgetpu_missing.so.1"
    with pytest.raises(runtime.ModelError, match="libedgetpu_missing.so.1") as caught:
        runtime.Classifier(tiny_models["int8"], delegate=library)
    assert "delegate" in str(caught.value)
    not_a_delegate = ctypes.util.find_library("m")  # the C maths library: loads, but is no delegate
    if not_a_delegate:
        with pytest.raises(runtime.ModelError, match="not a TFLite external delegate"):
            runtime.Classifier(tiny_models["int8"], delegate=not_a_delegate)


# -- bad model files --------------------------------------------------------------------------


def test_missing_and_corrupt_models(tiny_models, tmp_path):
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    missing = tmp_path / "missing.tflite"
    with pytest.raises(runtime.ModelError, match="model file not found") as caught:
        runtime.Classifier(missing)
    assert str(missing) in str(caught.value)

    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(os.urandom(2000))
    with pytest.raises(runtime.ModelError, match="not a TFLite model") as caught:
        runtime.Classifier(garbage)
    assert str(garbage) in str(caught.value)

    truncated = tmp_path / "truncated.tflite"
    content = tiny_models["int8"].read_bytes()
    truncated.write_bytes(content[: len(content) // 2])  # keeps the TFL3 identifier
    with pytest.raises(runtime.ModelError, match="not a valid TFLite model") as caught:
        runtime.Classifier(truncated)
    assert str(truncated) in str(caught.value)

    with pytest.raises(runtime.ModelError, match="directory"):
        runtime.Classifier(tmp_path)


def test_labels_problems_name_the_file(tiny_models, tmp_path):
    model = tmp_path / "model.tflite"
    model.write_bytes(tiny_models["int8"].read_bytes())
    with pytest.raises(runtime.ModelError, match="labels file not found") as caught:
        runtime.Classifier(model)
    assert str(tmp_path / "labels.txt") in str(caught.value)

    short = tmp_path / "short_labels.txt"
    short.write_text("red\ngreen\n")
    with pytest.raises(runtime.ModelError, match="2 labels, but .* outputs 5 classes") as caught:
        runtime.Classifier(model, labels_path=short)
    assert str(short) in str(caught.value) and str(model) in str(caught.value)

    explicit = tmp_path / "colours.txt"
    explicit.write_text("\n".join(LABELS) + "\n")
    assert runtime.Classifier(model, labels_path=explicit).labels == LABELS


def test_model_whose_input_is_not_an_image(tiny_models):
    with pytest.raises(runtime.ModelError, match="not an RGB image") as caught:
        runtime.Classifier(tiny_models["not_image"])
    assert str(tiny_models["not_image"]) in str(caught.value)


# -- bad inputs -------------------------------------------------------------------------------


def test_bad_images_raise_image_error_and_the_classifier_survives(tiny_models, tmp_path):
    classifier = runtime.Classifier(tiny_models["int8"])
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(solid_png(COLOURS["red"])[:60])
    for source in (b"not an image", b"", tmp_path / "missing.jpg", truncated):
        with pytest.raises(preprocess.ImageError):
            classifier.classify(source)
    with pytest.raises(preprocess.ImageError):
        classifier.classify_batch([solid_png(COLOURS["red"]), b"not an image"])
    assert classifier.classify(solid_png(COLOURS["blue"]), top_k=1)[0][0] == "blue"


def test_predict_checks_its_arguments(tiny_models):
    classifier = runtime.Classifier(tiny_models["int8"])
    with pytest.raises(ValueError, match="shaped"):
        classifier.predict(np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        classifier.predict(np.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), np.float32))
    with pytest.raises(ValueError, match="top_k"):
        classifier.classify(solid_png(COLOURS["red"]), top_k=0)
    assert classifier.predict(np.zeros((0, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)).shape == (0, len(LABELS))


# -- no TensorFlow, and the command line ---------------------------------------------------

NO_TENSORFLOW_SCRIPT = """
import json, sys
from edge import runtime
classifier = runtime.Classifier(sys.argv[1])
predictions = classifier.classify(sys.argv[2], top_k=2)
heavy = sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
print(json.dumps({"predictions": predictions, "heavy_modules": heavy, "runtime": classifier.runtime_name}))
"""


def test_classifying_never_imports_tensorflow(tiny_models, tmp_path):
    image = tmp_path / "green.png"
    image.write_bytes(solid_png(COLOURS["green"]))
    environment = dict(os.environ, PYTHONPATH=str(REPOSITORY))
    completed = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW_SCRIPT, str(tiny_models["int8"]), str(image)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["heavy_modules"] == []
    assert result["predictions"][0][0] == "green"
    expected = runtime.Classifier(tiny_models["int8"]).classify(image, top_k=2)
    assert [tuple(pair) for pair in result["predictions"]] == expected


def test_command_line(tiny_models, tmp_path, capsys):
    """edge/classify.py: a line per image on stdout; an unreadable file named on stderr, exit 1; a bad model, exit 2."""
    image = tmp_path / "white.png"
    image.write_bytes(solid_png(COLOURS["white"]))
    assert classify.main([str(image), "--model", str(tiny_models["int8"]), "--top-k", "2"]) == 0
    assert capsys.readouterr().out.startswith(f"{image}: white ")
    assert classify.main([str(tmp_path / "missing.png"), str(image), "--model", str(tiny_models["int8"])]) == 1
    captured = capsys.readouterr()
    assert f"error: {tmp_path / 'missing.png'}: cannot read the file" in captured.err
    assert captured.out.startswith(f"{image}: white ")  # The readable image is still answered.
    assert classify.main([str(image), "--model", str(tmp_path / "none.tflite")]) == 2
    captured = capsys.readouterr()
    assert "model file not found" in captured.err and captured.out == ""
    assert classify.main([str(image), "--model", str(tiny_models["int8"]), "--top-k", "1", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["results"][0]["predictions"][0]["label"] == "white" and answer["errors"] == []


# -- the benchmark -----------------------------------------------------------------------------


def test_benchmark_measures_every_variant(tiny_models, tmp_path, capsys, load_benchmark):
    benchmark = load_benchmark("runtime_latency")
    config = benchmark.BenchmarkConfig(model=str(tiny_models["int8"]), runs=3, warmup=1, threads=1)
    result = benchmark.run(config)
    # model_float32 and model_int8 carry the converter's names; the test-only variants do not.
    assert [row["variant"] for row in result["results"]] == [
        name for name in run_folder.VARIANTS if name in ("float32", "int8") for _ in runtime.available_runtimes()
    ]
    for row in result["results"]:
        assert row["size_bytes"] == Path(row["file"]).stat().st_size
        for timing in (row["invoke_ms"], row["end_to_end_ms"]):
            assert 0 < timing["median"] <= timing["p90"]
    only = benchmark.run(benchmark.BenchmarkConfig(model=str(tiny_models["int8_input"]), runs=2, warmup=0))
    assert {row["variant"] for row in only["results"]} == {"model_int8_input"}

    output = tmp_path / "benchmark.json"
    assert benchmark.main(["--model", str(tiny_models["int8"]), "--only", "--runs", "2", "--json", str(output)]) == 0
    assert "| int8 |" in capsys.readouterr().out
    assert json.loads(output.read_text())["results"][0]["variant"] == "int8"
    assert benchmark.main(["--model", str(tmp_path / "none.tflite")]) == 2
    assert "model file not found" in capsys.readouterr().err

    # A variant that cannot be loaded gets a row saying why; the others are still measured.
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (folder / "model_int8.tflite").write_bytes(tiny_models["int8"].read_bytes())
    (folder / "model_float32.tflite").write_bytes(b"not a model at all")
    assert benchmark.main(["--model", str(folder / "model_int8.tflite"), "--runs", "2"]) == 1
    table = capsys.readouterr().out
    assert "| float32 |" in table and "cannot load" in table and "not a TFLite model" in table
    assert "| int8 |" in table


# -- the converter's real output -----------------------------------------------------------


def test_smoke_run_variants_load_as_their_metadata_says(smoke_run, tmp_path):
    folder = Path(smoke_run) / run_folder.TFLITE_DIR
    metadata = artifacts.read_json(folder / run_folder.METADATA_FILE)
    labels = artifacts.read_labels(folder / run_folder.LABELS_FILE)
    images = np.random.default_rng(5).integers(0, 256, (4, 48, 40, 3), dtype=np.uint8)
    for variant, description in metadata["variants"].items():
        classifier = runtime.Classifier(folder / Path(description["file"]).name)
        assert list(classifier.input_size) == metadata["input_size"]
        assert str(classifier.input_dtype) == metadata["input_dtype"]
        assert classifier.labels == labels
        results = classifier.classify_batch(list(images), top_k=3)
        assert len(results) == 4 and all(len(result) == 3 and result[0][0] in labels for result in results)
    # The shipped file classifies without TensorFlow, too.
    image = tmp_path / "photo.png"
    Image.fromarray(images[0]).save(image)
    completed = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW_SCRIPT, str(folder / "model_int8.tflite"), str(image)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(REPOSITORY)),
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout.strip().splitlines()[-1])["heavy_modules"] == []
