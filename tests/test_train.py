"""The training run: artifacts, save/load, weights files, config errors, resume, backends."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
#: Predictions of a model before saving and after loading must agree to float32 rounding.
ROUND_TRIP_TOLERANCE = 1e-6


@pytest.mark.slow
def test_smoke_run_writes_a_complete_loadable_run_directory(smoke_run):
    for name in (
        "config.json",
        "model.keras",
        "labels.txt",
        "metadata.json",
        "history.csv",
        "metrics.json",
        "report.md",
        "state.json",
    ):
        assert (smoke_run / name).is_file(), name
    config = json.loads((smoke_run / "config.json").read_text())
    assert config["dataset"] == "smoke" and config["model"] == "se_cnn"
    labels = (smoke_run / "labels.txt").read_text().split()
    metadata = json.loads((smoke_run / "metadata.json").read_text())
    assert metadata["num_classes"] == len(labels) == 10
    assert metadata["input_size"] == [32, 32] and metadata["input_dtype"] == "uint8"
    assert metadata["parameters"] > 0 and metadata["training_seconds"] > 0
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    for key in ("top1", "top5", "loss"):
        assert 0.0 <= metrics[key] <= (1.0 if key != "loss" else 100.0), key
    assert metrics["top5"] >= metrics["top1"]
    with open(smoke_run / "history.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2, 3]
    assert all(row["stage"] == "finetune" and float(row["learning_rate"]) > 0 for row in rows)
    # No temporary file of the atomic writes is left behind.
    assert not [path for path in smoke_run.rglob(".partial-*")]


@pytest.mark.slow
def test_metadata_counts_the_best_epoch_from_one_as_the_console_does(smoke_run):
    """metadata.json's best epoch is the number the console printed ("epoch 3/4") and the plots show;
    state.json and history.csv keep Keras' index from 0, which --resume reads (old files unchanged)."""
    with open(smoke_run / "history.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    best_row = max(rows, key=lambda row: float(row["val_accuracy"]))
    best = json.loads((smoke_run / "metadata.json").read_text())["best_epoch"]
    assert best["epoch"] == int(best_row["epoch"]) + 1 and best["stage"] == best_row["stage"]
    assert json.loads((smoke_run / "state.json").read_text())["best"]["epoch"] == int(best_row["epoch"])


@pytest.mark.slow
def test_saved_model_predicts_like_the_model_in_memory(smoke_run):
    """Reloading must not change predictions (EfficientNet reloads lost accuracy before: keras#20147)."""
    import keras

    from train import models
    from train.config import TrainConfig

    config = TrainConfig(model="efficientnet_b0", weights="none", image_size=48, augment="basic")
    model, _ = models.build_model(config, 10, (32, 32, 3))
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    # One training step moves the weights and BatchNorm statistics away from their initial values.
    model.compile("adam", "categorical_crossentropy")
    model.fit(images, np.eye(10, dtype="float32")[np.arange(8)], epochs=1, verbose=0)
    path = smoke_run.parent / "round_trip.keras"
    model.save(path)
    reloaded = models.load_model(path)
    before = keras.ops.convert_to_numpy(model(images, training=False))
    after = keras.ops.convert_to_numpy(reloaded(images, training=False))
    np.testing.assert_allclose(after, before, atol=ROUND_TRIP_TOLERANCE)
    # And the run's own model.keras loads and keeps its uint8 contract.
    run_model = models.load_model(smoke_run / "model.keras")
    assert run_model.inputs[0].dtype == "uint8"
    probabilities = keras.ops.convert_to_numpy(run_model(images[:, :32, :32], training=False))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


# Loading another architecture's file on purpose makes Keras warn once per skipped layer group.
@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_weights_path_loads_a_file_saved_by_the_same_architecture(tmp_path):
    import keras

    from train import models
    from train.config import TrainConfig

    source = keras.applications.MobileNetV3Large(include_top=False, weights=None, input_shape=(32, 32, 3))
    weights = tmp_path / "backbone.weights.h5"
    source.save_weights(weights)
    config = TrainConfig(model="mobilenet_v3_large", weights=str(weights), image_size=32)
    _, backbone = models.build_model(config, 10, (32, 32, 3))
    for expected, loaded in zip(source.weights, backbone.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded), keras.ops.convert_to_numpy(expected))

    wrong = TrainConfig(model="efficientnet_b0", weights=str(weights), image_size=32)
    with pytest.raises(models.WeightsUnavailableError, match="does not fit efficientnet_b0"):
        models.build_model(wrong, 10, (32, 32, 3))
    with pytest.raises(models.WeightsUnavailableError, match="no such file"):
        models.build_model(TrainConfig(weights=str(tmp_path / "missing.h5")), 10, (32, 32, 3))


def test_every_model_builds_with_the_uint8_contract():
    from train import models
    from train.config import TrainConfig

    for name in ("cnn", "se_cnn", "efficientnet_b0", "mobilenet_v3_large", "vgg16", "resnet50"):
        config = TrainConfig(model=name, weights="none", image_size=32 if name != "cnn" else None)
        model, backbone = models.build_model(config, 7, (32, 32, 3))
        assert model.inputs[0].dtype == "uint8", name
        assert tuple(model.outputs[0].shape) == (None, 7), name
        assert (backbone is None) == (name in ("cnn", "se_cnn")), name


def test_a_mixed_precision_model_is_copied_to_float32_for_export():
    import keras

    from train import models
    from train.config import TrainConfig

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model, _ = models.build_model(TrainConfig(weights="none", image_size=32), 10, (32, 32, 3))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert any(layer.dtype_policy.name == "mixed_bfloat16" for layer in model._flatten_layers())
    copy = models.as_float32(model)
    assert {layer.dtype_policy.name for layer in copy._flatten_layers()} == {"float32"}
    for original, copied in zip(model.weights, copy.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(copied), keras.ops.convert_to_numpy(original))
    float_model, _ = models.build_model(TrainConfig(model="cnn", weights="none"), 10, (32, 32, 3))
    assert models.as_float32(float_model) is float_model  # Nothing to do: no copy.


def test_unfreeze_fraction_trains_the_top_layers_and_keeps_batchnorm_frozen():
    import keras

    from train import models
    from train.config import TrainConfig

    _, backbone = models.build_model(TrainConfig(weights="none", image_size=32), 10, (32, 32, 3))
    models.set_backbone_trainable(backbone, 0.2, pretrained=True)
    flags = [layer.trainable for layer in backbone.layers]
    boundary = flags.index(True)
    assert not any(flags[:boundary])
    assert all(
        layer.trainable or isinstance(layer, keras.layers.BatchNormalization) for layer in backbone.layers[boundary:]
    )
    assert not any(layer.trainable for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization))
    models.set_backbone_trainable(backbone, 0.0, pretrained=True)
    assert backbone.trainable_weights == []


def test_config_files_and_flags_are_validated(tmp_path, capsys):
    from edge.common import command
    from edge.common.configuration import ConfigError, build_config, read_config_file
    from train import run as train_run
    from train.config import PRESETS, TrainConfig

    def parse_config(argv):
        return command.parse_config(train_run.COMMAND, argv)

    good = tmp_path / "good.yaml"
    good.write_text("model: cnn\nepochs: 3\nbatch-size: 16\n")
    config = parse_config(["--config", str(good), "--epochs", "5"])
    assert (config.model, config.epochs, config.batch_size) == ("cnn", 5, 16)  # The flag wins over the file.
    assert parse_config(["--preset", "smoke"]).dataset == "smoke"

    for text, message in (
        ("epochs: three\n", "expects int"),
        ("learning_rat: 0.1\n", "unknown option"),
        ("model: alexnet\n", "must be one of"),
        ("- a list\n", "expected a mapping"),
    ):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(SystemExit) as exit_info:
            parse_config(["--config", str(bad)])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(["--unfreeze", "1.5"])
    assert "unfreeze must be" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="val_split"):
        build_config(TrainConfig, {"val_split": 1.5})
    with pytest.raises(ConfigError, match="cannot read config file"):
        read_config_file(tmp_path / "absent.json")
    for name, preset in PRESETS.items():  # Every preset is a valid configuration.
        build_config(TrainConfig, preset, source=name)


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch, make_small_config):
    from train import callbacks, run

    run_dir = tmp_path / "interrupted"
    config = make_small_config(run_dir, epochs=4, smoke_samples_per_class=40, export=False)
    original = callbacks.RunRecorder.on_epoch_end

    def interrupt_after_second_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(callbacks.RunRecorder, "on_epoch_end", interrupt_after_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run.run(config)
    assert (run_dir / "model.keras").is_file() and not (run_dir / "metrics.json").exists()
    monkeypatch.setattr(callbacks.RunRecorder, "on_epoch_end", original)

    with pytest.raises(Exception, match="already holds a run"):
        run.run(config)
    result = run.run(make_small_config(run_dir, resume=True))
    with open(run_dir / "history.csv", newline="") as stream:
        epochs = [int(row["epoch"]) for row in csv.DictReader(stream)]
    assert epochs == [0, 1, 2, 3]  # Epochs 0-1 kept, 2-3 trained after the restart, none twice.
    assert 0.0 <= result["top1"] <= 1.0 and (run_dir / "metrics.json").is_file()


@pytest.mark.slow
def test_a_run_interrupted_in_its_head_stage_resumes_without_an_extra_epoch(
    tmp_path, make_small_config, interrupt_head_then_resume
):
    """Killed after head epoch 1 of 2: the resumed head trains epoch 2 only, the fine-tune stage its one epoch.

    Keras' BackupAndRestore left its resumed epoch in the model, and the fine-tune stage then
    started there: one epoch too many and a duplicate history row.
    """
    import keras

    weights = tmp_path / "b0.weights.h5"
    keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(weights)
    run_dir = tmp_path / "head-interrupted"
    config = make_small_config(
        run_dir,
        model="efficientnet_b0",
        weights=str(weights),
        image_size=32,
        head_epochs=2,
        epochs=1,
        smoke_samples_per_class=12,
        batch_size=16,
        export=False,
    )
    trained, rows = interrupt_head_then_resume(config, make_small_config)
    assert trained == [("head", 1), ("finetune", 2)]
    assert rows == [("head", 0), ("head", 1), ("finetune", 2)]
    assert not (run_dir / "checkpoints" / "backup_head").exists()  # A finished stage's backups are gone.


def _run_script(arguments, environment=None, timeout=600):
    """Run a script of this checkout: PYTHONPATH first, so an editable install of another checkout loses."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(environment or {}))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *arguments], cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=timeout
    )


#: The longest a test waits for a training process to reach a point (a bound, not a measurement).
PROCESS_WAIT_SECONDS = 300


def _start_script(arguments, environment=None, ignore_sigint=False):
    """Start a script of this checkout; `ignore_sigint` starts it as a background job of a
    non-interactive shell starts it (`bash -c 'python ... &'`): with SIGINT ignored."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(environment or {}))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))
    start = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
    return subprocess.Popen(
        [sys.executable, *arguments],
        cwd=REPOSITORY,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=start,
    )


def _wait_for(path: Path, process) -> None:
    deadline = time.monotonic() + PROCESS_WAIT_SECONDS
    while not path.exists():
        assert process.poll() is None, f"the run ended before writing {path}: {process.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.slow
def test_resume_survives_the_damaged_files_a_sigkill_can_leave(tmp_path):
    """SIGKILL a real run after two epochs, damage what a kill can damage, and resume: it falls back and says so.

    Damaged: the newest backup (emptied, as a kill during an in-place rewrite left Keras' own), a
    truncated state.json, and a Keras BackupAndRestore pair of an older version (empty weights,
    truncated training_metadata.json).
    """
    run_dir = tmp_path / "killed"
    arguments = [
        "train/run.py",
        "--preset",
        "smoke",
        "--smoke-samples-per-class",
        "30",
        "--epochs",
        "10",
        "--no-export",
        "--verbose",
        "0",
        "--out",
        str(run_dir),
    ]
    process = _start_script(arguments)
    backups = run_dir / "checkpoints" / "backup_finetune"
    _wait_for(backups / "epoch-0002.weights.h5", process)
    process.send_signal(signal.SIGKILL)  # Ten epochs: the stage is still running, its backups are there.
    process.communicate()
    newest = max(backups.glob("epoch-*.weights.h5"))
    kept = int(newest.name[6:10]) - 1  # The backup before the damaged newest one.
    newest.write_bytes(b"")
    state = run_dir / "state.json"
    state.write_text(state.read_text()[:5] if state.exists() else "{")
    (backups / "latest.weights.h5").write_bytes(b"")
    (backups / "training_metadata.json").write_text('{"epo')

    completed = _run_script(["train/run.py", "--resume", "--out", str(run_dir)])
    assert completed.returncode == 0, completed.stderr[-3000:]
    output = completed.stdout + completed.stderr
    assert "Traceback" not in output
    assert f"{newest} is damaged" in output and f"resuming after epoch {kept} from" in output
    assert "state.json: not valid JSON" in output and "rebuilt from the run folder" in output
    assert "training_metadata.json cannot be read" in output
    with open(run_dir / "history.csv", newline="") as stream:
        assert [int(row["epoch"]) for row in csv.DictReader(stream)] == list(range(10))
    assert json.loads(state.read_text())["completed_stages"] == ["finetune"]
    assert (run_dir / "metrics.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_background_run_stops_on_sigint_and_sigterm_and_resumes(tmp_path, stop_signal, exit_code):
    """A real run started with SIGINT ignored (a background job), sent a real signal after its first
    epoch: it stops with the shell's status for the signal, and --resume finishes every epoch once."""
    run_dir = tmp_path / "signalled"
    process = _start_script(
        [
            "train/run.py",
            "--preset",
            "smoke",
            "--smoke-samples-per-class",
            "30",
            "--epochs",
            "10",
            "--no-export",
            "--verbose",
            "0",
            "--out",
            str(run_dir),
        ],
        ignore_sigint=True,
    )
    _wait_for(run_dir / "checkpoints" / "backup_finetune" / "epoch-0001.weights.h5", process)
    process.send_signal(stop_signal)
    _, stderr = process.communicate(timeout=PROCESS_WAIT_SECONDS)
    assert process.returncode == exit_code, stderr[-3000:]
    assert f"{stop_signal.name}: stopped" in stderr and "--resume" in stderr and "Traceback" not in stderr
    assert not (run_dir / "metrics.json").exists()

    completed = _run_script(["train/run.py", "--resume", "--out", str(run_dir)])
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "resuming after epoch" in completed.stdout
    with open(run_dir / "history.csv", newline="") as stream:
        assert [int(row["epoch"]) for row in csv.DictReader(stream)] == list(range(10))


@pytest.mark.slow
def test_default_run_offline_stops_with_one_clear_message(tmp_path):
    # An empty Keras cache, and a download address that cannot answer, make the machine "offline".
    # --allow-cpu: without a GPU the run would otherwise stop earlier, at the CPU refusal.
    completed = _run_script(
        ["train/run.py", "--allow-cpu", "--out", str(tmp_path / "run")],
        {
            "KERAS_HOME": str(tmp_path / "keras"),
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",
        },
    )
    assert completed.returncode == 2
    assert "--data-dir" in completed.stderr and "--preset smoke" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.slow
def test_jax_backend_trains_the_smoke_data_without_tensorflow(tmp_path, make_small_config):
    """Training needs no TensorFlow: the import is blocked as if it were not installed.

    (Keras itself imports TensorFlow when it is installed, to seed it, so "not imported" would
    test Keras rather than us.)
    """
    pytest.importorskip("jax")
    config = make_small_config(tmp_path / "jax-run", epochs=2, export=False)
    script = (
        "import dataclasses, json, sys\n"
        "class BlockTensorFlow:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'tensorflow':\n"
        "            raise ModuleNotFoundError(\"No module named 'tensorflow'\")\n"
        "sys.meta_path.insert(0, BlockTensorFlow())\n"
        "from train import run\n"
        "from train.config import TrainConfig\n"
        f"result = run.run(TrainConfig(**json.loads({json.dumps(dataclasses.asdict(config))!r})))\n"
        "import keras\n"
        "print(json.dumps({'top1': result['top1'], 'backend': keras.backend.backend()}))\n"
    )
    completed = _run_script(["-c", script], {"KERAS_BACKEND": "jax"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax"
    assert 0.0 <= result["top1"] <= 1.0
    assert (tmp_path / "jax-run" / "model.keras").is_file()


@pytest.mark.slow
def test_a_jax_run_exports_to_tflite_and_writes_its_check(tmp_path):
    """The export at the end of a JAX run: no seed-generator state (uint32) reaches the converter.

    The wide gate keeps this about the conversion; the gate itself is tested in test_convert.py.
    """
    pytest.importorskip("jax")
    run_dir = tmp_path / "jax-export"
    completed = _run_script(
        [
            "train/run.py",
            "--preset",
            "smoke",
            "--epochs",
            "1",
            "--smoke-samples-per-class",
            "60",
            "--max-drop",
            "100",
            "--out",
            str(run_dir),
        ],
        {"KERAS_BACKEND": "jax"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    quantization = json.loads((run_dir / "quantization.json").read_text())
    assert quantization["passed"] and set(quantization["variants"]) >= {"float32", "int8"}
    assert (run_dir / "tflite" / "model_int8.tflite").is_file()
    assert json.loads((run_dir / "metadata.json").read_text())["training"]["backend"] == "jax"


#: A run that believes it has two GPUs and trains data-parallel on two simulated devices: JAX's host
#: platform split in two (XLA_FLAGS), TensorFlow's CPU split into two logical devices. Only device
#: discovery is stubbed; the distribution, the compile and the fit are the multi-GPU run's own.
TWO_DEVICE_SCRIPT = """
import json, os, sys
if os.environ["KERAS_BACKEND"] == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from train import devices, run
from train.config import TrainConfig
devices.gpu_names = lambda: ["simulated GPU 0", "simulated GPU 1"]
devices.mirrored_devices = lambda: ["/device:CPU:0", "/device:CPU:1"]
run.run(TrainConfig(**json.loads(sys.argv[1])))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_a_run_trains_data_parallel_on_two_devices(tmp_path, make_small_config, backend):
    """Two devices: compile inside the strategy's scope (TensorFlow), and a batch of 33 rounded to 32."""
    pytest.importorskip(backend)
    run_dir = tmp_path / f"two-{backend}"
    config = make_small_config(
        run_dir, epochs=2, smoke_samples_per_class=30, batch_size=33, precision="float32", export=False
    )
    completed = _run_script(
        ["-c", TWO_DEVICE_SCRIPT, json.dumps(dataclasses.asdict(config))],
        {"KERAS_BACKEND": backend, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "batch size 33 does not divide over 2 devices; training with 32 (16 per device)" in completed.stdout
    training = json.loads((run_dir / "metadata.json").read_text())["training"]
    assert training["backend"] == backend and training["replicas"] == 2
    assert json.loads((run_dir / "config.json").read_text())["batch_size"] == 32
    assert (run_dir / "metrics.json").is_file()


def test_the_batch_is_rounded_down_to_a_multiple_of_the_devices(capsys):
    from train import devices
    from train.config import TrainConfig

    config = TrainConfig(batch_size=128)
    assert devices.fit_batch_to_replicas(config, 1) is config and devices.fit_batch_to_replicas(config, 4) is config
    assert devices.fit_batch_to_replicas(config, 3).batch_size == 126
    assert devices.fit_batch_to_replicas(config, 6).batch_size == 126
    assert devices.fit_batch_to_replicas(TrainConfig(batch_size=5), 8).batch_size == 8  # One image per device at least.
    assert "training with 126 (21 per device)" in capsys.readouterr().out


@pytest.mark.slow
def test_two_stage_transfer_run_with_a_weights_file_augmentation_and_logs(tmp_path, make_small_config):
    """The default run's path on a small scale: pretrained backbone (a weights file), head then
    fine-tuning of the top 20%, RandAugment, MixUp, label smoothing, TensorBoard logs."""
    import keras

    weights = tmp_path / "efficientnetb0_32.weights.h5"
    keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(weights)
    from train import run

    run_dir = tmp_path / "transfer"
    config = make_small_config(
        run_dir,
        model="efficientnet_b0",
        weights=str(weights),
        image_size=32,
        head_epochs=1,
        epochs=1,
        unfreeze="0.2",
        smoke_samples_per_class=12,
        batch_size=16,
        augment="randaugment",
        mix="mixup",
        label_smoothing=0.1,
        tensorboard=True,
        export=False,
    )
    result = run.run(config)
    with open(run_dir / "history.csv", newline="") as stream:
        stages = [(row["stage"], int(row["epoch"])) for row in csv.DictReader(stream)]
    assert stages == [("head", 0), ("finetune", 1)]
    training = json.loads((run_dir / "metadata.json").read_text())["training"]
    assert training["images_per_second"] > 0 and training["images_per_second_stage"] == "finetune"
    assert list((run_dir / "logs").rglob("events.out.tfevents.*")), "no TensorBoard event files"
    assert 0.0 <= result["top1"] <= 1.0 and (run_dir / "metrics.json").is_file()


@pytest.mark.slow
def test_a_folder_of_images_trains_with_names_from_the_folders(tmp_path, make_small_config):
    from PIL import Image

    from edge.common.artifacts import read_labels
    from train import run

    random = np.random.default_rng(0)
    colours = {"blue": (0, 0, 255), "green": (0, 200, 0), "red": (255, 0, 0)}
    for name, colour in colours.items():
        (tmp_path / "photos" / name).mkdir(parents=True)
        for index in range(12):
            noise = random.integers(-30, 30, (40, 40, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "photos" / name / f"{index}.png")
    run_dir = tmp_path / "folder-run"
    result = run.run(
        make_small_config(
            run_dir,
            dataset=str(tmp_path / "photos"),
            model="cnn",
            epochs=2,
            val_split=0.2,
            test_split=0.25,
            export=False,
        )
    )
    assert read_labels(run_dir / "labels.txt") == sorted(colours)
    metadata = json.loads((run_dir / "metadata.json").read_text())
    assert metadata["input_size"] == [40, 40] and metadata["num_classes"] == 3
    assert metadata["test_images"] == 9  # A quarter of each class's 12 images.
    assert 0.0 <= result["top1"] <= 1.0


def test_drop_connect_is_active_while_fine_tuning_a_pretrained_backbone(tmp_path):
    """Two training-mode calls differ (stochastic depth and augmentation), inference calls agree."""
    import keras

    from train import models
    from train.config import TrainConfig

    weights = tmp_path / "b0.weights.h5"
    keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(weights)
    config = TrainConfig(model="efficientnet_b0", weights=str(weights), image_size=32, augment="none", dropout=0.0)
    model, backbone = models.build_model(config, 10, (32, 32, 3))
    models.set_backbone_trainable(backbone, 1.0, pretrained=True)
    # The pooled features: the untrained head's softmax is too flat to show the difference.
    features = keras.Model(model.inputs, model.get_layer("pool").output)
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    first, second = (keras.ops.convert_to_numpy(features(images, training=True)) for _ in range(2))
    # Random weights make tiny features, so the difference is measured relative to their size.
    assert np.abs(first - second).max() > 0.01 * np.abs(first).max(), "drop-connect is off in training mode"
    inference = [keras.ops.convert_to_numpy(features(images, training=False)) for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])


@pytest.mark.parametrize("fraction", [1.0, 0.3])
def test_frozen_pretrained_batchnorm_keeps_its_statistics_over_a_train_step(tmp_path, fraction):
    import keras

    from train import models
    from train.config import TrainConfig

    weights = tmp_path / "b0.weights.h5"
    keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(weights)
    model, backbone = models.build_model(
        TrainConfig(model="efficientnet_b0", weights=str(weights), image_size=32), 10, (32, 32, 3)
    )
    models.set_backbone_trainable(backbone, fraction, pretrained=True)
    norms = [layer for layer in backbone._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and not any(layer.trainable for layer in norms)
    before = [
        keras.ops.convert_to_numpy(variable).copy() for layer in norms for variable in layer.non_trainable_weights
    ]
    model.compile("adam", "categorical_crossentropy")
    images = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    model.fit(images, np.eye(10, dtype="float32")[np.arange(8)], epochs=1, verbose=0)
    after = [keras.ops.convert_to_numpy(variable) for layer in norms for variable in layer.non_trainable_weights]
    for old, new in zip(before, after):
        np.testing.assert_array_equal(new, old)


def test_weights_path_builds_the_imagenet_structure_with_the_same_outputs(tmp_path, monkeypatch):
    """`--weights PATH` gives the layers and outputs of `weights="imagenet"` for the same weights.

    The ImageNet file cannot be downloaded here, so the imagenet path's download is pointed at a
    file of random weights (the structure Keras builds for "imagenet" is what is compared).
    """
    import keras
    from keras.src.applications import efficientnet as keras_efficientnet

    from train import models
    from train.config import TrainConfig

    plain = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3))
    weights = tmp_path / "b0.weights.h5"
    plain.save_weights(weights)
    monkeypatch.setattr(keras_efficientnet.file_utils, "get_file", lambda *arguments, **keywords: str(weights))
    reference = keras.applications.EfficientNetB0(include_top=False, weights="imagenet", input_shape=(32, 32, 3))
    monkeypatch.undo()
    _, backbone = models.build_model(
        TrainConfig(model="efficientnet_b0", weights=str(weights), image_size=32), 10, (32, 32, 3)
    )

    def describe(model):
        return [
            (type(layer).__name__, layer.get_config().get("scale"))
            for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer)
        ]

    assert describe(backbone) == describe(reference)
    assert len(describe(backbone)) == len(describe(plain)) + 1  # The stem's Rescaling(1/sqrt(std)).
    images = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(backbone(images, training=False)),
        keras.ops.convert_to_numpy(reference(images, training=False)),
        atol=1e-6,
    )


def test_the_default_augmentation_compiles_with_xla_under_tensorflow():
    """The training step with the default augmentation is XLA-compiled (a fit step runs with it).

    XLA is chosen on a GPU; on a CPU-only TensorFlow it is slower, so the run leaves it off there.
    """
    import keras

    from train import devices, models, optimization
    from train.config import TrainConfig

    config = TrainConfig(model="se_cnn", weights="none", batch_size=8, epochs=1)
    model, _ = models.build_model(config, 10, (32, 32, 3))
    assert devices.resolve_jit_compile(model, gpus=["a GPU"]) is True
    assert devices.resolve_jit_compile(model, gpus=[]) is False
    optimization.compile_for_stage(model, config, 10, 1e-3, steps_per_epoch=2, epochs=1, jit_compile=True)
    assert model.jit_compile is True
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    history = model.fit(images, np.eye(10, dtype="float32")[np.arange(16) % 10], batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert model.train_function is not None and model.jit_compile is True  # Not silently turned off.
    # The Keras layers it replaced are not jit-safe: with RandAugment the step is not compiled.
    randaugment, _ = models.build_model(dataclasses.replace(config, augment="randaugment"), 10, (32, 32, 3))
    assert devices.resolve_jit_compile(randaugment, gpus=["a GPU"]) is False
    assert keras.backend.backend() == "tensorflow"


@pytest.mark.slow
def test_the_default_augmentation_compiles_with_xla_under_jax(tmp_path, make_small_config):
    """Under JAX a run with the default augmentation resolves jit_compile to True and records it."""
    pytest.importorskip("jax")
    config = make_small_config(
        tmp_path / "jax-xla", epochs=1, augment="basic", smoke_samples_per_class=20, export=False
    )
    script = (
        "import dataclasses, json\n"
        "from train import run\n"
        "from train.config import TrainConfig\n"
        f"run.run(TrainConfig(**json.loads({json.dumps(dataclasses.asdict(config))!r})))\n"
    )
    completed = _run_script(["-c", script], {"KERAS_BACKEND": "jax"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    training = json.loads((tmp_path / "jax-xla" / "metadata.json").read_text())["training"]
    assert training["backend"] == "jax" and training["jit_compile"] is True
    assert "backend jax" in completed.stdout and "XLA on" in completed.stdout


def test_pad_crop_flip_moves_pixels_in_training_and_is_the_identity_at_inference():
    import keras

    from train import models

    layer = models.RandomPadCropFlip(seed=0)
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images)
    augmented = keras.ops.convert_to_numpy(layer(images, training=True))
    assert augmented.shape == images.shape and not np.array_equal(augmented, images)
    # A crop of a reflect-padded image: every value is one of the image's own pixels, unchanged.
    for source, result in zip(images, augmented):
        assert set(np.unique(result)) <= set(np.unique(source))


@pytest.mark.slow
def test_metadata_records_what_ran_and_a_log_gets_one_line_per_epoch(tmp_path, make_small_config):
    """Run as a script with stdout to a pipe: the start line, one line per epoch, no progress bar,
    and metadata.json's `training` facts."""
    run_dir = tmp_path / "logged"
    completed = _run_script(
        [
            "train/run.py",
            "--preset",
            "smoke",
            "--smoke-samples-per-class",
            "30",
            "--epochs",
            "2",
            "--augment",
            "basic",
            "--no-export",
            "--out",
            str(run_dir),
        ]
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.splitlines()
    assert any(
        line.startswith("training on CPU")
        and "backend tensorflow" in line
        and "precision float32" in line
        and "XLA off (TensorFlow's XLA is slower" in line
        for line in lines
    ), completed.stdout
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/2", "2/2"]
    assert "val_accuracy" in epoch_lines[-1]
    assert "\r" not in completed.stdout and "\x08" not in completed.stdout
    training = json.loads((run_dir / "metadata.json").read_text())["training"]
    assert training["backend"] == "tensorflow" and training["precision"] == "float32"
    assert training["jit_compile"] is False and training["images_per_second"] > 0  # TensorFlow on a CPU.
    assert training["devices"] and training["devices"][0].startswith("CPU")


def test_the_training_rate_leaves_out_compilation_and_validation():
    """A clock that only the test moves: 1 s per training batch, 1,000 s of "compilation" in the first
    batch, 100 s per validation batch. The rate must see the training batches alone."""
    import keras

    from train import callbacks

    class FakeClock:
        now = 0.0

        def __call__(self):
            return self.now

    clock = FakeClock()

    class Work(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            clock.now += 1.0 + (1000.0 if clock.now == 0 else 0.0)

        def on_test_batch_begin(self, batch, logs=None):
            clock.now += 100.0

    batch_size, steps = 4, 8
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "categorical_crossentropy")
    images = np.zeros((batch_size * steps, 3), dtype="float32")
    labels = np.eye(2, dtype="float32")[np.arange(batch_size * steps) % 2]
    rate = callbacks.TrainingRate(batch_size, clock=clock)  # Before Work: it reads the clock before a batch's second.
    model.fit(
        images,
        labels,
        batch_size=batch_size,
        epochs=2,
        validation_data=(images[:8], labels[:8]),
        callbacks=[rate, Work()],
        verbose=0,
    )
    timed_batches = (steps - callbacks.WARMUP_BATCHES) + steps  # The warm-up of the first epoch only.
    assert (rate.images, rate.seconds) == (timed_batches * batch_size, float(timed_batches))
    assert rate.images_per_second == batch_size  # One batch a (fake) second.
    assert clock.now > 1000 + 2 * 100  # The compilation and the validation did happen, outside the timing.


def test_auto_precision_follows_the_gpus_compute_capability(monkeypatch):
    """bfloat16 from compute capability 8.0, float16 below (free Colab's T4, Kaggle's P100), float32 on
    a CPU, with the TensorFlow device query stubbed as a T4 and an H100 would answer it."""
    import tensorflow as tf

    from train import devices as training_devices  # `devices` here names TensorFlow's.

    answers = {
        "GPU:0": {"device_name": "Tesla T4", "compute_capability": (7, 5)},
        "GPU:1": {"device_name": "NVIDIA H100 80GB HBM3", "compute_capability": (9, 0)},
    }
    devices = [tf.config.PhysicalDevice(name=f"/physical_device:{name}", device_type="GPU") for name in answers]
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: devices if kind == "GPU" else [])
    monkeypatch.setattr(
        tf.config.experimental, "get_device_details", lambda device: answers[device.name.split(":", 1)[1]]
    )
    assert training_devices.gpu_names() == ["Tesla T4", "NVIDIA H100 80GB HBM3"]
    assert training_devices.gpu_compute_capabilities() == [(7, 5), (9, 0)]

    t4, h100 = ["Tesla T4"], ["NVIDIA H100 80GB HBM3"]
    policy, reason = training_devices.resolve_precision("auto", t4, [(7, 5)])
    assert policy == "mixed_float16" and "7.5" in reason and "loss scaling" in reason
    assert training_devices.resolve_precision("auto", ["Tesla P100"], [(6, 0)])[0] == "mixed_float16"
    policy, reason = training_devices.resolve_precision("auto", h100, [(9, 0)])
    assert policy == "mixed_bfloat16" and "9.0" in reason
    assert training_devices.resolve_precision("auto", ["A100"], [(8, 0)])[0] == "mixed_bfloat16"
    assert (
        training_devices.resolve_precision("auto", t4 + h100, [(7, 5), (9, 0)])[0] == "mixed_float16"
    )  # The slowest decides.
    assert (
        training_devices.resolve_precision("auto", h100, [None])[0] == "mixed_float16"
    )  # Unknown: float16 runs everywhere.
    assert training_devices.resolve_precision("auto", [], [])[0] == "float32"
    assert training_devices.resolve_precision("mixed_bfloat16", t4, [(7, 5)]) == (
        "mixed_bfloat16",
        "chosen with --precision",
    )
    assert (
        training_devices._capability("8.6") == (8, 6) and training_devices._capability(None) is None
    )  # JAX reports a string.


def test_mixed_float16_trains_with_loss_scaling():
    """Keras wraps a mixed_float16 model's optimizer in a LossScaleOptimizer at compile (auto_scale_loss)."""
    import keras

    from train import models, optimization
    from train.config import TrainConfig

    config = TrainConfig(model="cnn", weights="none", batch_size=8, epochs=1, learning_rate=1e-3)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model, _ = models.build_model(config, 10, (32, 32, 3))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    optimization.compile_for_stage(model, config, 10, 1e-3, steps_per_epoch=2, epochs=1, jit_compile=False)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)


def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere():
    import io

    from train import stages

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert stages.progress_verbosity("auto", Terminal()) == 1
    assert stages.progress_verbosity("auto", io.StringIO()) == 0
    assert stages.progress_verbosity("2", io.StringIO()) == 2


def test_the_default_recipe_refuses_a_cpu_with_a_clear_message():
    from edge.common.errors import UserError
    from train import devices
    from train.config import TrainConfig

    with pytest.raises(UserError) as error:
        devices.refuse_cpu_training(TrainConfig(), 45_000, gpus=[])
    message = str(error.value)
    assert "no GPU found" in message and ".[gpu]" in message and "--allow-cpu" in message
    devices.refuse_cpu_training(TrainConfig(allow_cpu=True), 45_000, gpus=[])
    devices.refuse_cpu_training(TrainConfig(), 45_000, gpus=["NVIDIA H100"])
    devices.refuse_cpu_training(TrainConfig(), 1_200, gpus=[])  # A small folder trains on a CPU.
    devices.refuse_cpu_training(TrainConfig(image_size=32), 45_000, gpus=[])
    devices.refuse_cpu_training(TrainConfig(model="cnn", weights="none"), 45_000, gpus=[])


def test_the_no_gpu_message_says_what_to_install_and_what_tensorflow_saw(monkeypatch):
    """By backend: TensorFlow's GPU build, JAX's; with signs of an NVIDIA GPU, what TensorFlow's
    hidden start-up log said, or that JAX's CUDA plugin is missing (the device probes stubbed)."""
    from edge.common.errors import UserError
    from train import devices
    from train.config import TrainConfig

    def message(backend):
        with pytest.raises(UserError) as error:
            devices.refuse_cpu_training(TrainConfig(), 45_000, gpus=[], backend=backend)
        return str(error.value)

    monkeypatch.setattr(devices, "gpu_signs", lambda: [])
    assert ".[gpu]" in message("tensorflow") and "--allow-cpu" in message("tensorflow")
    jax_message = message("jax")
    assert ".[jax-gpu]" in jax_message and "jax[cuda12]" in jax_message and ".[gpu]'" not in jax_message

    monkeypatch.setattr(devices, "gpu_signs", lambda: ["CUDA packages installed: nvidia-cudnn-cu12"])
    monkeypatch.setattr(
        devices,
        "tensorflow_gpu_report",
        lambda: devices.describe_tensorflow_probe(
            '{"is_cuda_build": true, "cuda_version": "12.5.1", "cudnn_version": "9"}\n',
            "W0000 00:00:1.5 42 gpu_device.cc:2341] Cannot dlopen some GPU libraries. Please make sure the missing "
            "libraries mentioned above are installed properly.\nI0000 00:00:1.6 42 other.cc:1] unrelated\n",
        ),
    )
    tensorflow_message = message("tensorflow")
    assert "nvidia-cudnn-cu12" in tensorflow_message and "built for CUDA 12.5.1 and cuDNN 9" in tensorflow_message
    assert "said: Cannot dlopen some GPU libraries" in tensorflow_message and "unrelated" not in tensorflow_message
    monkeypatch.setattr(devices, "_installed", lambda name: False)
    assert "JAX's CUDA plugin is not installed" in message("jax") and ".[jax-gpu]" in message("jax")
    assert devices.describe_tensorflow_probe('{"is_cuda_build": false}', "").startswith("this TensorFlow is a CPU-only")


@pytest.mark.slow
def test_tensorflow_is_asked_what_it_saw_with_its_full_log():
    """The real probe: a child TensorFlow with TF_CPP_MIN_LOG_LEVEL=0 reports its build and its GPU start-up."""
    from train import devices

    report = devices.tensorflow_gpu_report()
    assert report.startswith(("this TensorFlow was built for CUDA", "this TensorFlow is a CPU-only build")), report
    assert "GPU start-up said" in report


@pytest.mark.slow
def test_under_jax_tensorflow_is_kept_off_the_gpus_and_jax_is_not():
    """TensorFlow's own device setting, made before Keras imports it; JAX's devices and the environment stay."""
    pytest.importorskip("jax")
    script = (
        "import json, os\n"
        "from train import devices\n"
        "hidden = devices.hide_gpus_from_tensorflow()\n"
        "import keras, jax, tensorflow as tf\n"
        "print(json.dumps({'hidden': hidden, 'tensorflow_gpus': tf.config.get_visible_devices('GPU'),\n"
        "                  'jax_devices': len(jax.devices()), 'backend': keras.backend.backend(),\n"
        "                  'cuda_visible': os.environ.get('CUDA_VISIBLE_DEVICES')}))\n"
    )
    completed = _run_script(["-c", script], {"KERAS_BACKEND": "jax"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    seen = json.loads(completed.stdout.strip().splitlines()[-1])
    assert seen == {
        "hidden": True,
        "tensorflow_gpus": [],
        "jax_devices": seen["jax_devices"],
        "backend": "jax",
        "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    assert seen["jax_devices"] >= 1
    completed = _run_script(
        ["-c", "from train import devices; print(devices.hide_gpus_from_tensorflow())"], {"KERAS_BACKEND": "tensorflow"}
    )
    assert completed.stdout.strip().splitlines()[-1] == "False"  # TensorFlow trains: its GPUs stay.


@pytest.mark.slow
def test_the_default_command_refuses_a_cpu_before_downloading(tmp_path):
    completed = _run_script(
        ["train/run.py", "--out", str(tmp_path / "run")],
        {
            "KERAS_HOME": str(tmp_path / "keras"),
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",
        },
    )
    assert completed.returncode == 2
    assert "no GPU found" in completed.stderr and "--allow-cpu" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "run").exists()  # A refused run leaves no folder.


def test_a_refused_run_creates_no_folder(tmp_path, monkeypatch):
    """The default command on a CPU, with and without --out: refused, and nothing is left behind."""
    from train import devices, run
    from train.config import TrainConfig

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(devices, "gpu_names", lambda: [])
    for config in (TrainConfig(), TrainConfig(out=str(tmp_path / "chosen"))):
        with pytest.raises(devices.TrainingDeviceError):
            run.run(config)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_from_scratch_model_records_weights_none_and_one_stage(tmp_path, make_small_config):
    """--model se_cnn with the default --weights imagenet: it has no pretrained weights, and says so."""
    from train import run

    run_dir = tmp_path / "scratch"
    run.run(
        make_small_config(
            run_dir, weights="imagenet", head_epochs=None, epochs=2, smoke_samples_per_class=20, export=False
        )
    )
    assert json.loads((run_dir / "config.json").read_text())["weights"] == "none"
    metadata = json.loads((run_dir / "metadata.json").read_text())
    assert metadata["weights"] == "none" and metadata["epochs"] == {"head": 0, "finetune": 2}
    report = (run_dir / "report.md").read_text()
    assert "weights none" in report and "2 epochs from scratch (one stage, every layer)" in report
    assert "head +" not in report and "weights imagenet" not in report


def test_each_model_gets_its_recipe_and_small_datasets_enough_steps():
    from train.config import (
        FROM_SCRATCH_RECIPE,
        MIN_RECIPE_BATCH_SIZE,
        MIN_STEPS_PER_EPOCH,
        PLAIN_CNN_RECIPE,
        PRESETS,
        PRETRAINED_RECIPE,
        TrainConfig,
    )

    default = TrainConfig().with_recipe(45_000)
    assert (default.head_epochs, default.batch_size, default.learning_rate) == (
        PRETRAINED_RECIPE.head_epochs,
        PRETRAINED_RECIPE.batch_size,
        PRETRAINED_RECIPE.learning_rate,
    )
    for scratch in (TrainConfig(model="cnn"), TrainConfig(model="se_cnn"), TrainConfig(weights="none")):
        resolved = scratch.with_recipe(45_000)
        expected = PLAIN_CNN_RECIPE if scratch.model == "cnn" else FROM_SCRATCH_RECIPE
        assert resolved.head_epochs == 0 and resolved.learning_rate == expected.learning_rate
        assert resolved.batch_size == FROM_SCRATCH_RECIPE.batch_size
    assert PLAIN_CNN_RECIPE.learning_rate < FROM_SCRATCH_RECIPE.learning_rate  # No BatchNorm: a gentler rate.
    assert TrainConfig(model="cnn").with_recipe(40 * MIN_STEPS_PER_EPOCH).batch_size == 40  # Enough steps.
    assert TrainConfig(model="cnn").with_recipe(100).batch_size == MIN_RECIPE_BATCH_SIZE
    assert TrainConfig(model="cnn", batch_size=100).with_recipe(1_215).batch_size == 100  # A chosen size stays.
    # The seed presets set what they reproduce; the recipe changes none of it on CIFAR.
    for name, preset in PRESETS.items():
        resolved = TrainConfig(**preset).with_recipe(45_000)
        for key in ("head_epochs", "batch_size", "learning_rate"):
            if key in preset:
                assert getattr(resolved, key) == preset[key], (name, key)
        assert resolved.batch_size == preset.get("batch_size", 128), name


def test_the_augment_help_names_what_basic_does():
    """`--augment basic` is models.py's pad-crop-flip layer; the help once said translation and zoom."""
    from train.config import TrainConfig

    text = {field.name: field.metadata["help"] for field in dataclasses.fields(TrainConfig)}["augment"]
    assert "reflect-pad, random crop back to size, left-right flip" in text
    assert "zoom" not in text and "translation" not in text


def test_train_side_commands_quiet_tensorflows_no_gpu_lines():
    """Importing `train` (every train-side command does, before TensorFlow) sets TF_CPP_MIN_LOG_LEVEL=3,
    which hides "failed call to cuInit ... (303)" on a machine without an NVIDIA driver."""
    code = "import train, tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), environment.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPOSITORY, capture_output=True, text=True, timeout=300, env=environment
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "cuInit" not in completed.stderr
    explicit = subprocess.run(
        [sys.executable, "-c", "import os, train; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
        env={**environment, "TF_CPP_MIN_LOG_LEVEL": "0"},
    )
    assert explicit.stdout.strip() == "0"  # A user's own setting wins.
