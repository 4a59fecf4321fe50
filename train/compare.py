"""Compare finished runs side by side in one markdown table.

    python train/compare.py runs/cnn-baseline runs/efficientnet-frozen runs/efficientnet-all
    python train/compare.py runs/* --out comparison.md

One row per run: model, unfreeze policy, epochs, image size, parameters, test
top-1 and top-5 of the float model, int8 top-1 (when the run was exported and
has quantization.json), model size and training time. Every field is read from
the run's own files (config.json, metadata.json, metrics.json,
quantization.json); what a run lacks shows as "n/a". This is how the seed
projects' comparisons (CNN from scratch vs feature extraction vs fine-tuning)
are reproduced.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.common import artifacts, command, configuration, formatting, records, run_folder
from edge.common.configuration import option
from edge.common.formatting import NOT_AVAILABLE

COLUMNS = (
    "run",
    "model",
    "unfreeze",
    "epochs (head + fine-tune)",
    "image size",
    "parameters",
    "top-1",
    "top-5",
    "int8 top-1",
    "model size",
    "training time",
)


@dataclasses.dataclass
class CompareConfig:
    """Options of `python train/compare.py`: the run directories (positional) and the flags."""

    runs: list = option([], "run directories to compare, one table row each", "Comparison")
    out: str | None = option(None, "also write the table to this markdown file", "Comparison", metavar="FILE.md")


def run(config: CompareConfig) -> dict:
    """Build the table; write it to `config.out` when set. Returns {"rows": [...], "markdown": str}."""
    if not config.runs:
        raise configuration.ConfigError("give at least one run directory")
    rows = []
    for run_dir in map(Path, config.runs):
        try:
            rows.append(describe_run(run_dir))
        except NoRunError as skipped:  # `runs/*` also matches what is not a run: say so, go on.
            print(f"note: skipped {skipped}", file=sys.stderr)
    if not rows:
        raise NoRunError("none of the given folders holds a run")
    markdown = render_table(rows)
    if config.out:
        artifacts.write_atomic(config.out, markdown)
    return {"rows": rows, "markdown": markdown}


class NoRunError(artifacts.ArtifactError):
    """A path that is no run folder (an empty folder, a file): skipped when other runs are given."""


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def describe_run(run_dir: Path) -> dict:
    """The comparison row of one run, as raw values (None where the run does not say)."""
    if not run_dir.exists():
        raise artifacts.ArtifactError(f"{run_dir}: no such run directory")
    if not run_dir.is_dir():
        raise NoRunError(f"{run_dir}: not a folder")
    # config.json is the training configuration's own file, read as plain values so that a run of an
    # older version, with options this one lacks, still compares.
    config = run_folder.read_optional_json(run_dir / run_folder.CONFIG_FILE)
    metadata = records.read_optional(records.RunMetadata, run_dir / run_folder.METADATA_FILE)
    metrics = records.read_optional(records.Metrics, run_dir / run_folder.METRICS_FILE)
    quantization = records.read_optional(records.Quantization, run_dir / run_folder.QUANTIZATION_FILE)
    if not (config or (metadata and metadata.to_dict()) or (metrics and metrics.to_dict())):
        raise NoRunError(f"{run_dir}: holds no run (none of config.json, metadata.json, metrics.json)")
    metadata, metrics = metadata or records.RunMetadata(), metrics or records.Metrics()
    epochs = metadata.epochs if isinstance(metadata.epochs, dict) else {}
    int8 = quantization.int8 if quantization else records.VariantResult()
    model_file = run_dir / run_folder.MODEL_FILE
    int8_file = run_dir / run_folder.TFLITE_DIR / run_folder.INT8_MODEL_FILE
    return {
        "run": run_dir.name,
        "model": _first(metadata.model, config.get("model")),
        "unfreeze": _first(metadata.unfreeze, config.get("unfreeze")),
        "head_epochs": _first(epochs.get("head"), config.get("head_epochs")),
        "finetune_epochs": _first(epochs.get("finetune"), config.get("epochs")),
        "image_size": _first(metadata.image_size, config.get("image_size")),
        "parameters": metadata.parameters,
        "top1": metrics.top1,
        "top5": metrics.top5,
        "int8_top1": int8.top1,
        "model_bytes": model_file.stat().st_size if model_file.exists() else None,
        "int8_bytes": _first(int8.size_bytes, int8_file.stat().st_size if int8_file.exists() else None),
        "training_seconds": metadata.training_seconds,
    }


def _parameters(count: Any) -> str:
    if not isinstance(count, int):
        return NOT_AVAILABLE
    return f"{count / 1e6:.2f} M" if count >= 1_000_000 else f"{count:,}"


def _cell(value: Any) -> str:
    return NOT_AVAILABLE if value is None else str(value).replace("|", "\\|")


def render_table(rows: Sequence[dict]) -> str:
    """The markdown table; accuracies as percentages, sizes in binary units (MiB)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        epochs = (
            NOT_AVAILABLE
            if row["head_epochs"] is None and row["finetune_epochs"] is None
            else f"{_cell(row['head_epochs'])} + {_cell(row['finetune_epochs'])}"
        )
        size = formatting.size(row["model_bytes"])
        if row["int8_bytes"] is not None:
            size += f" (int8 {formatting.size(row['int8_bytes'])})"
        cells = [
            _cell(row["run"]),
            _cell(row["model"]),
            _cell(row["unfreeze"]),
            epochs,
            _cell(row["image_size"]),
            _parameters(row["parameters"]),
            formatting.percent(row["top1"], 2),
            formatting.percent(row["top5"], 2),
            formatting.percent(row["int8_top1"], 2),
            size,
            formatting.duration(row["training_seconds"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


COMMAND = command.Command(
    name="compare",
    prog="python train/compare.py",
    description=__doc__.split("\n")[0],
    config_class=CompareConfig,
    run=run,
    render=lambda config, result: result["markdown"].rstrip("\n"),
    positional=(command.Positional("runs", "RUN", "run directories"),),
)


main = command.entry_point(COMMAND)


if __name__ == "__main__":
    sys.exit(main())
