"""The models the demo serves: the interpreters over a run's files, and the JSON the page shows.

    from demo import models
    from edge.common import run_folder
    served = models.load_models(run_folder.find_model_files(folder="runs/NAME"))

Which files to serve is decided by edge/common/run_folder.py (`find_model_files`,
`find_default_model`), the one place every consumer asks; this module loads them.
No Gradio import: hf_space/deploy.py, the benchmarks and the tests load models
without building a page. Imports numpy and a TFLite runtime (through edge.runtime);
never TensorFlow.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edge import runtime
from edge.common import artifacts, run_folder
from edge.common.errors import UserError


class DemoError(UserError):
    """The demo has no model to serve (none named and none found); the message says where it looked."""


@dataclasses.dataclass
class DemoModels:
    """The loaded classifiers and what the page says about them."""

    files: run_folder.ModelFiles
    model: runtime.Classifier
    reference: runtime.Classifier | None
    metadata: dict
    quantization: dict | None
    metrics: dict | None


def load_models(files: run_folder.ModelFiles, threads: int | None = None) -> DemoModels:
    """Load the interpreters; a corrupt model or labels file raises runtime.ModelError naming it."""
    model = runtime.Classifier(files.model, files.labels, threads=threads)
    reference = runtime.Classifier(files.reference, files.labels, threads=threads) if files.reference else None
    return DemoModels(
        files=files,
        model=model,
        reference=reference,
        metadata=_read_optional_json(files.metadata) or {},
        quantization=_read_optional_json(files.quantization),
        metrics=_read_optional_json(files.metrics),
    )


def _read_optional_json(path: Path | None) -> dict | None:
    """A side file that only decorates the page: a malformed one is reported on the page, not fatal."""
    if path is None:
        return None
    try:
        value = artifacts.read_json(path)
    except artifacts.ArtifactError as error:
        return {"error": str(error)}
    return value if isinstance(value, dict) else {"error": f"{path}: expected a JSON object"}
