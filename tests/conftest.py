"""Shared fixtures: one small finished run that the tests of every stage read.

The run is real (train/run.py's `run`): generated smoke data, the `se_cnn` baseline so it
trains in seconds (about 89% test top-1 here), evaluated and exported to every TFLite variant. Its gate is opened
wide on purpose (`SMOKE_RUN_MAX_DROP`): with a few dozen test images one image is
several points, and the gate itself is tested in tests/test_convert.py.

The camera-side tests (test_camera.py, test_serve.py, test_benchmarks.py) share that run's
int8 model as `tiny_model`, and generated image folders; their other helpers, which are not
fixtures, are in tests/camera_support.py.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from camera_support import FOLDER_IMAGES, LONG_FOLDER_IMAGES, _frame
from PIL import Image

#: Export gate for the fixture run, in points: wide, because this run exists to be read.
SMOKE_RUN_MAX_DROP = 100.0

# Keep TensorFlow's C++ logging out of test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def small_run_config(out: Path, **changes):
    """A fast smoke-data training config; `changes` override any field."""
    from train.config import TrainConfig

    values = dict(
        dataset="smoke",
        model="se_cnn",
        weights="none",
        smoke_samples_per_class=120,
        head_epochs=0,
        epochs=4,
        batch_size=32,
        learning_rate=3e-3,
        warmup_epochs=0.5,
        label_smoothing=0.0,
        augment="none",
        calibration_samples=40,
        max_drop=SMOKE_RUN_MAX_DROP,
        tensorboard=False,
        verbose="0",
        out=str(out),
    )
    values.update(changes)
    return TrainConfig(**values)


@pytest.fixture
def make_small_config():
    """The `small_run_config` factory, for tests that train runs of their own."""
    return small_run_config


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """Path of a finished run directory: trained, evaluated, exported (tflite/ and quantization.json)."""
    from train import run

    run_dir = tmp_path_factory.mktemp("runs") / "smoke-se-cnn"
    run.run(small_run_config(run_dir))
    return run_dir


@pytest.fixture(scope="session")
def tiny_model(smoke_run) -> Path:
    """The int8 model of the shared smoke run, with its labels.txt beside it: the camera-side tests' real model."""
    return smoke_run / "tflite" / "model_int8.tflite"


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for index in range(FOLDER_IMAGES):
        Image.fromarray(_frame(index, 40, 50)).save(folder / f"image_{index:02d}.png")
    (folder / "notes.txt").write_text("not an image, and not an image suffix: ignored")
    return folder


@pytest.fixture(scope="module")
def long_image_folder(tmp_path_factory) -> Path:
    """A folder that takes about a minute at --fps-limit 1, so a stopped run cannot be mistaken for a finished one."""
    folder = tmp_path_factory.mktemp("long_images")
    for index in range(LONG_FOLDER_IMAGES):
        Image.fromarray(_frame(index % 12, 40, 50)).save(folder / f"image_{index:03d}.png")
    return folder


@pytest.fixture(scope="session", autouse=True)
def gradio_upload_folder(tmp_path_factory) -> Path:
    """Gradio's upload folder for the session ($GRADIO_TEMP_DIR, inherited by the servers the tests start).

    The demo reads images only from there (demo/inputs.py), so a test hands it a photo by copying
    the photo in, as an upload would; and the session never touches the machine's shared /tmp/gradio.
    """
    folder = tmp_path_factory.mktemp("gradio-uploads")
    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
    else:
        os.environ["GRADIO_TEMP_DIR"] = previous


def as_upload(path: Path) -> Path:
    """A copy of `path` inside the session's Gradio upload folder, in a folder of its own as Gradio makes them."""
    folder = Path(tempfile.mkdtemp(dir=os.environ["GRADIO_TEMP_DIR"]))
    copy = folder / Path(path).name
    shutil.copyfile(path, copy)
    return copy


@pytest.fixture(scope="session")
def load_benchmark():
    """Load a script of benchmarks/ as a module: `load_benchmark("runtime_latency")`.

    The folder holds scripts, not an installed package. The module is registered in
    sys.modules first, because dataclasses look their module up there while the file runs.
    """

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def interrupt_head_then_resume(monkeypatch):
    """Run `config` until head epoch 1 of 2 ends (a KeyboardInterrupt there, as Ctrl-C would give),
    then resume it; return the (stage, epoch) pairs the resumed run trained and history.csv's rows."""
    import csv

    def interrupt_and_resume(config, make_config) -> tuple[list, list]:
        from train import callbacks, run

        original_end, original_begin = callbacks.RunRecorder.on_epoch_end, callbacks.RunRecorder.on_epoch_begin

        def interrupt_after_first_head_epoch(self, epoch, logs=None):
            original_end(self, epoch, logs)
            if self.stage == "head" and epoch == 0:
                raise KeyboardInterrupt

        monkeypatch.setattr(callbacks.RunRecorder, "on_epoch_end", interrupt_after_first_head_epoch)
        with pytest.raises(KeyboardInterrupt):
            run.run(config)
        monkeypatch.setattr(callbacks.RunRecorder, "on_epoch_end", original_end)
        trained = []

        def count(self, epoch, logs=None):
            trained.append((self.stage, epoch))
            original_begin(self, epoch, logs)

        monkeypatch.setattr(callbacks.RunRecorder, "on_epoch_begin", count)
        run.run(make_config(Path(config.out), resume=True))
        with open(Path(config.out) / "history.csv", newline="") as stream:
            rows = [(row["stage"], int(row["epoch"])) for row in csv.DictReader(stream)]
        return trained, rows

    return interrupt_and_resume
