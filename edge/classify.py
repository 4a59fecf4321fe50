"""Classify image files with a .tflite model and print the top-k labels: no TensorFlow.

    python edge/classify.py --model runs/NAME/tflite/model_int8.tflite photo.jpg [--top-k 5]
    cifar-classify --model models/model_int8.tflite *.jpg --json

One line per image, "FILE: label probability, ...". Exit status, as `train/predict.py` has it:
0 every image classified, 1 some files could not be read (each named on stderr), 2 nothing ran
(a bad model, labels or flag). The model goes through `edge.runtime.Classifier`, and the images
through `edge.preprocess.prepare_image`, the one preprocessing function.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from edge import preprocess, runtime
from edge.common import command, configuration
from edge.common.configuration import option


@dataclasses.dataclass
class ClassifyConfig:
    """The options of `python edge/classify.py`; the image files are its positional arguments."""

    images: list = option([], "image files")
    model: str | None = option(None, "the .tflite file; labels.txt is read from its folder", "Model")
    labels: str | None = option(None, "labels file (default: labels.txt next to the model)", "Model")
    runtime: Literal["litert", "tflite-runtime"] | None = option(
        None, "the TFLite runtime (default: the first installed)", "Model"
    )
    threads: int | None = option(None, "interpreter threads (default: the runtime's)", "Model")
    delegate: str | None = option(None, "external delegate library, e.g. libedgetpu.so.1", "Model")
    top_k: int = option(5, "labels to print per image", "Output")
    json: bool = option(False, "print the results as JSON instead of one line per image", "Output")


@dataclasses.dataclass(frozen=True)
class Classified:
    """The answers of one command: each readable image's top-k, and each unreadable one's reason."""

    model: str
    results: list[dict]  # {"file", "predictions": [{"label", "probability"}]}
    errors: list[dict]  # {"file", "error"}


def run(config: ClassifyConfig) -> Classified:
    """Load the model once, classify every image; an unreadable image is recorded, not raised."""
    if config.top_k < 1:
        raise configuration.ConfigError(f"--top-k must be at least 1, got {config.top_k}")
    classifier = runtime.Classifier(
        config.model,
        labels_path=config.labels,
        runtime=config.runtime,
        threads=config.threads,
        delegate=config.delegate,
    )
    results, failures = [], []
    for image in config.images:
        try:
            predictions = classifier.classify(image, config.top_k)
        except preprocess.ImageError as error:
            failures.append({"file": str(image), "error": error.reason})
            continue
        results.append(
            {
                "file": str(image),
                "predictions": [{"label": label, "probability": probability} for label, probability in predictions],
            }
        )
    return Classified(model=str(classifier.model_path), results=results, errors=failures)


def format_text(config: ClassifyConfig, result: Classified) -> str:
    """One line per classified image: "FILE: label 0.912, label 0.051, ..."."""
    return "\n".join(
        entry["file"]
        + ": "
        + ", ".join(f"{prediction['label']} {prediction['probability']:.3f}" for prediction in entry["predictions"])
        for entry in result.results
    )


COMMAND = command.Command(
    name="classify",
    prog="python edge/classify.py",
    description=__doc__.split("\n")[0],
    epilog="exit status: 0 all classified, 1 some files unreadable, 2 nothing ran",
    config_class=ClassifyConfig,
    run=run,
    render=format_text,
    exit_status=lambda config, result: command.report_failed_inputs(result.errors),
    json_output="json",
    required=("model",),
    positional=(command.Positional("images", "IMAGE", "image files (any format Pillow reads)"),),
)


main = command.entry_point(COMMAND)


if __name__ == "__main__":
    raise SystemExit(main())
