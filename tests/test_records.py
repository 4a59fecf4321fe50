"""The run records (edge/common/records.py): the pipeline's own files round-trip unchanged, an older
folder's files read with defaults, and a malformed file fails naming itself.

    .venv/bin/pytest tests/test_records.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.common import artifacts, records, run_folder

#: quantization.json as an export of an older version wrote it: no standard error, no broken/fixed
#: counts, no search record, no served variant, no runtime block.
OLDER_QUANTIZATION = {
    "reference": {"model": "keras float32", "top1": 0.5, "top5": 0.9},
    "test_images": 100,
    "variants": {
        "float32": {
            "top1": 0.5,
            "top5": 0.9,
            "top1_change": 0.0,
            "drop_points": 0.0,
            "agreement": 1.0,
            "kl_divergence": 0.0,
            "file": "model_float32.tflite",
            "size_bytes": 4000,
            "latency_ms": 2.0,
        },
        "int8": {
            "top1": 0.47,
            "top5": 0.88,
            "top1_change": -0.03,
            "drop_points": 3.0,
            "agreement": 0.9,
            "kl_divergence": 0.02,
            "file": "model_int8.tflite",
            "size_bytes": 1000,
            "latency_ms": 1.0,
        },
    },
    "max_drop": 1.0,
    "passed": False,
    "a_key_of_another_version": [1, 2],
}


def _run_files(run_dir: Path) -> list[tuple[type, Path]]:
    return [
        (records.RunMetadata, run_dir / run_folder.METADATA_FILE),
        (records.Metrics, run_dir / run_folder.METRICS_FILE),
        (records.Quantization, run_dir / run_folder.QUANTIZATION_FILE),
        (records.ModelMetadata, run_dir / run_folder.TFLITE_DIR / run_folder.METADATA_FILE),
    ]


def test_the_pipelines_files_round_trip_byte_for_byte(smoke_run):
    for record_type, path in _run_files(smoke_run):
        record = records.read(record_type, path)
        assert not record.extra, f"{path}: keys no field names: {sorted(record.extra)}"
        assert json.dumps(record.to_dict(), indent=2) + "\n" == path.read_text(encoding="utf-8"), path


def test_the_records_read_what_the_run_measured(smoke_run):
    metadata = records.read(records.RunMetadata, smoke_run / run_folder.METADATA_FILE)
    quantization = records.read(records.Quantization, smoke_run / run_folder.QUANTIZATION_FILE)
    served = records.read(records.ModelMetadata, smoke_run / run_folder.TFLITE_DIR / run_folder.METADATA_FILE)
    assert isinstance(metadata.training, records.TrainingRecord) and metadata.training.devices
    assert isinstance(quantization.int8, records.VariantResult) and quantization.int8.file == run_folder.INT8_MODEL_FILE
    assert served.served == quantization.served == records.served_variant(quantization)
    assert served.variants["int8"].drop_points == quantization.variants["int8"].drop_points
    assert records.Metrics.from_dict(artifacts.read_json(smoke_run / run_folder.METRICS_FILE)).top5 is not None


def test_an_older_file_reads_with_defaults_and_writes_back_unchanged(tmp_path):
    path = artifacts.write_json(tmp_path / run_folder.QUANTIZATION_FILE, OLDER_QUANTIZATION)
    quantization = records.read(records.Quantization, path)
    assert quantization.int8.broken is None and quantization.int8_search is None and quantization.served is None
    assert quantization.extra == {"a_key_of_another_version": [1, 2]}
    assert records.served_variant(quantization) == "float32"  # int8 misses the gate; float32 is within it
    assert quantization.to_dict() == OLDER_QUANTIZATION
    records.write(tmp_path / "again.json", quantization)
    assert (tmp_path / "again.json").read_text() == path.read_text()
    # What reads the record copes with what the older file lacks.
    assert "FAILED" in quantization.summary_line()
    assert "| int8 (full integer) |" in records.variant_table(quantization)
    # A run folder with only a few metadata keys, as the first versions wrote it.
    metadata = records.RunMetadata.from_dict({"model": "cnn", "input_size": [32, 32]})
    assert metadata.training is None and metadata.versions == {} and metadata.superclasses is None
    assert metadata.to_dict() == {"input_size": [32, 32], "model": "cnn"}


def test_a_record_made_in_code_writes_every_key_the_writers_always_write():
    metadata = records.ModelMetadata(model=None, served="int8")
    written = metadata.to_dict()
    assert written["model"] is None and written["superclasses"] is None and written["label_mode"] is None
    assert "reference" not in written  # Not known: left out, as the writers leave it out.


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"variants": [1]}', "variants: expected a JSON object, got list"),
        ('{"variants": {"int8": 3}}', "variants: int8: expected a JSON object, got int"),
        ('{"schema_version": 99}', "schema_version 99 is newer"),
    ],
)
def test_a_malformed_file_raises_an_error_naming_it(tmp_path, content, expected):
    path = tmp_path / run_folder.QUANTIZATION_FILE
    path.write_text(content)
    with pytest.raises(artifacts.ArtifactError, match=expected) as caught:
        records.read(records.Quantization, path)
    assert str(caught.value).startswith(str(path))


def test_read_optional_is_none_without_the_file(tmp_path):
    assert records.read_optional(records.Metrics, tmp_path / run_folder.METRICS_FILE) is None


def test_the_panel_table_is_the_one_the_demo_always_drew():
    """The demo's float-vs-int8 panel (demo/panels.py) draws the record's table (PANEL_COLUMNS): the same
    text, cell for cell, as the page had before the records."""
    from demo import panels  # No Gradio: the panels are text.

    assert panels.quantization_table(OLDER_QUANTIZATION) == (
        "| model | top-1 | top-5 | top-1 agreement with float | size | latency |\n|---|---|---|---|---|---|\n"
        "| Keras float (reference) | 50.0% | 90.0% | 100.0% | | |\n"
        "| float32 | 50.0% | 90.0% | 100.0% | 3.9 KiB | 2 ms |\n| int8 | 47.0% | 88.0% | 90.0% | 1000 B | 1 ms |\n\n"
        "The int8 gate (top-1 at most 1.0 points below the float model) FAILED."
    )
