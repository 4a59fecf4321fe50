"""A run's Keras model and data, loaded from its folder: what the check and the export reload.

`load_model(run_dir)` is the run's model.keras with the project's custom layers
(train/models.py); `load_splits(run_dir)` the very splits the run trained and was evaluated
on, rebuilt from its config.json (train/data.py). The JSON files beside them are records
(edge/common/records.py). Training side: this loads Keras.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.common import artifacts, run_folder
from train import data, models
from train.config import TrainConfig


def load_model(run_dir: str | Path) -> Any:
    """The run's Keras model (model.keras); ArtifactError naming the file when it is not there."""
    path = Path(run_dir) / run_folder.MODEL_FILE
    if not path.is_file():
        raise artifacts.ArtifactError(f"{path}: model file not found")
    return models.load_model(path)


def load_splits(run_dir: str | Path, config: TrainConfig | None = None) -> data.Splits:
    """The run's splits, from its config.json (or from `config`, when the caller has read it already)."""
    return data.load_splits(config if config is not None else TrainConfig.from_run(run_dir))
