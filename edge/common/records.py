"""The run folder's JSON files as typed records: what each holds, read and written in one place.

    from edge.common import records
    quantization = records.read(records.Quantization, run_dir / run_folder.QUANTIZATION_FILE)
    quantization.variants["int8"].drop_points

One dataclass per file (and per block inside one): `RunMetadata` and its `TrainingRecord`
(metadata.json of a run), `ModelMetadata` (tflite/metadata.json, what the demo and the Pi read),
`Metrics` (metrics.json) and `Quantization` (quantization.json: each variant's `VariantResult`,
the int8 search, the gate's verdict and the served variant). `from_dict` / `to_dict` map a record
to the JSON object the writers have always written, key for key in the same order, so the files
and everything that reads them stay as they were; `read` and `write` do the file and name it in
every error. The serving policy (`served_variant`: which variant the demo and the camera serve),
the gate (`passes`) and the float-vs-int8 Markdown table (`variant_table`) live here too, beside
the fields they read, so the report, the check, the demo and the cards render them alike.

Versions: every file written today is schema 1, and a file without a "schema_version" key is read
as schema 1. A record tolerates older folders: a missing key takes its field's default (None, or
empty), a key it does not know is kept in `extra` and written back where it was found. A file of a
newer schema than this module knows, or a block that is not a JSON object, raises RecordError
naming the file. Standard library only: the device side reads these files too.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from edge.common import artifacts, formatting, run_folder

#: The layout these records read and write. Files without a "schema_version" key are schema 1, so
#: the key is written only once a later layout needs it.
SCHEMA_VERSION = 1
#: The k of the top-k accuracy every report, table and page shows: the seed projects' top-5.
TOP_K = 5
#: A tiny tolerance of the gate: 1.0000000002 points (float noise) do not fail a 1.0 gate.
GATE_EPSILON = 1e-9

RecordType = TypeVar("RecordType", bound="Record")


class RecordError(artifacts.ArtifactError):
    """A run file's JSON does not have the shape its record expects; the message names the file."""


def field(
    default: Any = None,
    *,
    key: str | None = None,
    always: bool = False,
    record: type | None = None,
    mapping: type | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """One JSON key of a record.

    `key`: the JSON name when it is not the field's. `always`: written even when None (the writers
    write it as null, e.g. a run without superclasses); other fields are left out when None, as the
    writers leave out what they do not know. `record`: the field holds that record (a JSON object);
    `mapping`: it holds {name: that record}. A `factory` field left empty (a block the file did not
    hold) is not written either, unless `always`.
    """
    metadata = {"key": key, "always": always, "record": record, "mapping": mapping}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class Record:
    """A JSON object with known keys as fields; keys it does not know are kept in `extra`."""

    #: Keys the file held that no field names, in their order: written back, never dropped.
    extra: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False, kw_only=True)
    #: The keys a record read from a file held (None for one made in code): an `always` key an older
    #: file lacked is not added when the record is written back.
    present: frozenset[str] | None = dataclasses.field(default=None, repr=False, compare=False, kw_only=True)
    #: What the record is read from, for error messages.
    what: ClassVar[str] = "record"

    @classmethod
    def from_dict(cls: type[RecordType], values: Any, source: str | None = None) -> RecordType:
        """The record of one JSON object; RecordError (naming `source`) when it is not one."""
        source = source or cls.what
        if not isinstance(values, Mapping):
            raise RecordError(f"{source}: expected a JSON object, got {type(values).__name__}")
        version = values.get("schema_version", SCHEMA_VERSION)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise RecordError(
                f"{source}: schema_version {version!r} is newer than this code reads "
                f"({SCHEMA_VERSION}); update the project"
            )
        known, arguments = set(), {}
        for item in _fields(cls):
            key = item.metadata["key"] or item.name
            known.add(key)
            if key not in values:
                continue  # An older folder: the field's default.
            value = values[key]
            if value is None and item.default_factory is not dataclasses.MISSING:
                arguments[item.name] = item.default_factory()  # A null block reads as an empty one.
                continue
            if item.metadata["record"] is not None and value is not None:
                value = item.metadata["record"].from_dict(value, f"{source}: {key}")
            elif item.metadata["mapping"] is not None and value is not None:
                if not isinstance(value, Mapping):
                    raise RecordError(f"{source}: {key}: expected a JSON object, got {type(value).__name__}")
                value = {
                    name: item.metadata["mapping"].from_dict(entry, f"{source}: {key}: {name}")
                    for name, entry in value.items()
                }
            arguments[item.name] = value
        extra = {key: value for key, value in values.items() if key not in known}
        return cls(**arguments, extra=extra, present=frozenset(values))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, keys in the order the writers have always written them."""
        values: dict[str, Any] = {}
        for item in _fields(type(self)):
            value = getattr(self, item.name)
            key = item.metadata["key"] or item.name
            made_empty = item.default_factory is not dataclasses.MISSING and not (
                value.to_dict() if isinstance(value, Record) else value
            )
            always = item.metadata["always"] and (self.present is None or key in self.present)
            if (value is None or made_empty) and not always:
                continue  # What the file did not hold stays out, so a rewrite changes nothing.
            if isinstance(value, Record):
                value = value.to_dict()
            elif item.metadata["mapping"] is not None and value is not None:
                value = {name: entry.to_dict() if isinstance(entry, Record) else entry for name, entry in value.items()}
            values[key] = value
        values.update(self.extra)
        return values

    @classmethod
    def coerce(cls: type[RecordType], value: RecordType | Mapping[str, Any]) -> RecordType:
        """`value` as this record: itself, or read from a dict (callers that still hold the JSON)."""
        return value if isinstance(value, cls) else cls.from_dict(value)


def _fields(cls: type) -> list[dataclasses.Field]:
    return [item for item in dataclasses.fields(cls) if item.name not in ("extra", "present")]


def read(cls: type[RecordType], path: str | os.PathLike) -> RecordType:
    """The record in the JSON file at `path`; ArtifactError naming the file when it is missing or malformed."""
    return cls.from_dict(artifacts.read_json(path), str(path))


def read_optional(cls: type[RecordType], path: str | os.PathLike) -> RecordType | None:
    """The record at `path`, or None when the file does not exist (a malformed one still raises)."""
    return read(cls, path) if Path(path).exists() else None


def write(path: str | os.PathLike, record: Record) -> Path:
    """Write the record as the indented JSON every run file is, atomically."""
    values = record.to_dict()
    return artifacts.write_json(path, values)


# ---------------------------------------------------------------------------------------------
# metadata.json of a run (train/run.py, train/pretrained.py)


@dataclasses.dataclass
class TrainingRecord(Record):
    """metadata.json's "training" block: what the run trained on and how fast."""

    what: ClassVar[str] = "metadata.json: training"
    backend: str | None = field()
    devices: list[str] = field(factory=list, always=True)
    precision: str | None = field()
    precision_reason: str | None = field()
    replicas: int | None = field()
    jit_compile: bool | None = field()
    images_per_second: float | None = field(always=True)
    images_per_second_stage: str | None = field()


@dataclasses.dataclass
class RunMetadata(Record):
    """A run's metadata.json: input, backbone, dataset, sizes of the splits, versions, training."""

    what: ClassVar[str] = "metadata.json"
    input_size: list[int] | None = field()
    input_dtype: str | None = field()
    image_size: int | None = field()
    model: str | None = field()
    weights: str | None = field()
    dataset: str | None = field()
    label_mode: str | None = field(always=True)
    num_classes: int | None = field()
    labels_file: str | None = field()
    superclasses: list[str] | None = field(always=True)
    superclass_of: list[int] | None = field(always=True)
    parameters: int | None = field()
    precision: str | None = field()
    unfreeze: str | None = field()
    #: {"head": epochs, "finetune": epochs} as they trained.
    epochs: dict[str, int] | None = field()
    train_images: int | None = field()
    val_images: int | None = field()
    test_images: int | None = field()
    #: The ImageNet starter only: where its weights come from.
    pretrained: dict[str, Any] | None = field()
    versions: dict[str, str] = field(factory=dict, always=True)
    created: str | None = field()
    training: TrainingRecord | None = field(record=TrainingRecord)
    training_seconds: float | None = field()
    images_per_second: float | None = field()
    #: Counted from 1, as the console prints epochs.
    best_epoch: int | None = field()


# ---------------------------------------------------------------------------------------------
# metrics.json (train/evaluate.py)


@dataclasses.dataclass
class Metrics(Record):
    """metrics.json: the float model on the test split (definitions: train/metrics.py). Fractions."""

    what: ClassVar[str] = "metrics.json"
    split: str | None = field()
    model_file: str | None = field()
    evaluated: str | None = field()
    samples: int | None = field()
    num_classes: int | None = field()
    top1: float | None = field()
    top5: float | None = field(key=f"top{TOP_K}")
    loss: float | None = field()
    #: {"precision", "recall", "f1"}: means over classes.
    macro: dict[str, float] | None = field()
    #: {"expected_calibration_error", "bins"}.
    calibration: dict[str, Any] | None = field()
    #: {class name: {"precision", "recall", "f1", "accuracy", "support"[, "superclass"]}}.
    per_class: dict[str, dict[str, Any]] = field(factory=dict, always=True)
    #: {"accuracy", "errors_within_superclass", "names"}, or null without superclasses.
    superclass: dict[str, Any] | None = field(always=True)
    confused_pairs: list[dict[str, Any]] = field(factory=list, always=True)
    confusion_matrix: list[list[int]] | None = field()


# ---------------------------------------------------------------------------------------------
# quantization.json (train/export.py, train/check.py)


@dataclasses.dataclass
class VariantResult(Record):
    """One TFLite variant against the Keras model on the test split (train/check.py's Checker)."""

    what: ClassVar[str] = "quantization.json: variant"
    top1: float | None = field()
    top5: float | None = field()
    #: Fraction; negative when the variant is worse.
    top1_change: float | None = field()
    drop_points: float | None = field()
    drop_standard_error_points: float | None = field()
    #: Test images the Keras model gets right and this variant wrong, and the reverse.
    broken: int | None = field()
    fixed: int | None = field()
    agreement: float | None = field()
    kl_divergence: float | None = field()
    worst_classes: list[dict[str, Any]] | None = field()
    file: str | None = field()
    size_bytes: int | None = field()
    latency_ms: float | None = field()
    #: {"dtype", "scale", "zero_point"[, "values"]} of the input and output tensors.
    input: dict[str, Any] | None = field()
    output: dict[str, Any] | None = field()
    #: How the converter made it (int8 and a shipped fallback only).
    scheme: str | None = field()
    float_tensors: list[str] | None = field()
    float_layers: list[dict[str, Any]] | None = field()

    #: What the converter knew about how a variant was made; a re-check keeps it.
    MADE_BY: ClassVar[tuple[str, ...]] = ("scheme", "float_tensors", "float_layers")


@dataclasses.dataclass
class Reference(Record):
    """The Keras float model's own accuracy on the test split: what every variant is compared with."""

    what: ClassVar[str] = "quantization.json: reference"
    model: str | None = field()
    top1: float | None = field()
    top5: float | None = field()


@dataclasses.dataclass
class RuntimeInfo(Record):
    """The TFLite runtime the check measured with."""

    what: ClassVar[str] = "quantization.json: runtime"
    name: str | None = field()
    version: str | None = field(always=True)
    threads: int | None = field(always=True)
    latency_runs: int | None = field()


@dataclasses.dataclass
class Int8Search(Record):
    """How the int8 model was found (train/export_search.py): attempts, the ranking, the fallback verdict."""

    what: ClassVar[str] = "quantization.json: int8_search"
    attempts: list[dict[str, Any]] = field(factory=list, always=True)
    ranked_tensors: int | None = field()
    ranking: list[dict[str, Any]] = field(factory=list, always=True)
    #: {"variant", "scheme", "float_tensors", "latency_ms", "float32_latency_ms", "shipped", "reason"}, or null.
    fallback: dict[str, Any] | None = field(always=True)
    #: The quantization-aware fine-tune's settings, when it ran.
    qat: dict[str, Any] | None = field()


@dataclasses.dataclass
class Quantization(Record):
    """quantization.json: every variant measured against the Keras model, the gate and what is served."""

    what: ClassVar[str] = "quantization.json"
    reference: Reference = field(record=Reference, factory=Reference)
    test_images: int | None = field()
    variants: dict[str, VariantResult] = field(mapping=VariantResult, factory=dict)
    max_drop: float | None = field()
    #: The int8 model's drop, repeated at the top for a quick look.
    drop_points: float | None = field()
    passed: bool | None = field()
    gate: str | None = field()
    runtime: RuntimeInfo | None = field(record=RuntimeInfo)
    int8_search: Int8Search | None = field(record=Int8Search)
    served: str | None = field()
    source_run: str | None = field()
    #: {"samples", "split", "stratified", "seed"}.
    calibration: dict[str, Any] | None = field()
    conversion_seconds: float | None = field()
    versions: dict[str, str] | None = field()
    created: str | None = field()
    #: The ImageNet starter only (train/pretrained.py): int8 against float on every check view.
    photos: dict[str, Any] | None = field()

    @property
    def int8(self) -> VariantResult:
        """The full-integer model's measurements (the gate's subject); empty when not measured."""
        return self.variants.get(run_folder.SERVED_VARIANT) or VariantResult()

    def keep_how_made(self, previous: Quantization) -> None:
        """Copy what the converter recorded about each variant from `previous` (a re-check cannot know it)."""
        for name, measured in self.variants.items():
            before = previous.variants.get(name)
            for key in VariantResult.MADE_BY if before is not None else ():
                if getattr(before, key) is not None:
                    setattr(measured, key, getattr(before, key))

    def summary_line(self) -> str:
        """One line for a terminal: the int8 model against the float one and the gate's verdict."""
        verdict = "PASSED" if self.passed else "FAILED"
        return (
            f"int8 top-1 {formatting.percent(self.int8.top1, 2)} vs Keras float "
            f"{formatting.percent(self.reference.top1, 2)}: "
            f"drop {self.int8.drop_points:.2f} points, gate {self.max_drop} points: {verdict} "
            f"({self.test_images} test images); serving {self.served or run_folder.SERVED_VARIANT}"
        )

    def gate_failure(self, run_dir: str | os.PathLike) -> str:
        """The error line of an int8 model that misses the gate, naming the file that says more."""
        return (
            f"error: no int8 model is within {self.max_drop} points of the float model: the full-integer "
            f"model_int8.tflite misses the gate (serving {self.served or run_folder.SERVED_VARIANT} instead); "
            f"see {Path(run_dir) / run_folder.QUANTIZATION_FILE}"
        )


# ---------------------------------------------------------------------------------------------
# tflite/metadata.json (train/export.py): all the demo and the Pi need besides the model files


@dataclasses.dataclass
class ShippedVariant(Record):
    """A variant's file and its measurements as tflite/metadata.json lists them."""

    what: ClassVar[str] = "tflite/metadata.json: variant"
    file: str | None = field()
    size_bytes: int | None = field()
    input: dict[str, Any] | None = field()
    output: dict[str, Any] | None = field()
    top1: float | None = field()
    top5: float | None = field()
    agreement: float | None = field()
    drop_points: float | None = field()
    latency_ms: float | None = field()
    scheme: str | None = field()
    float_layers: list[dict[str, Any]] | None = field()

    @classmethod
    def of(cls, measured: VariantResult) -> ShippedVariant:
        """The shipped view of a quantization.json variant (how it was made only when known)."""
        shipped = cls(
            **{
                item.name: getattr(measured, item.name)
                for item in _fields(cls)
                if item.name not in ("scheme", "float_layers")
            }
        )
        if measured.scheme is not None:
            shipped.scheme, shipped.float_layers = measured.scheme, measured.float_layers
        return shipped


@dataclasses.dataclass
class ModelMetadata(Record):
    """tflite/metadata.json: the input, the labels, the served variant and the gate's verdict."""

    what: ClassVar[str] = "tflite/metadata.json"
    source_run: str | None = field()
    model: str | None = field(always=True)
    dataset: str | None = field()
    input_size: list[int] | None = field()
    input_dtype: str | None = field()
    labels_file: str | None = field()
    num_classes: int | None = field()
    label_mode: str | None = field(always=True)
    superclasses: list[str] | None = field(always=True)
    superclass_of: list[int] | None = field(always=True)
    preprocessing: str | None = field()
    #: What the demo and the camera serve (run_folder.served_model): `served_variant`.
    served: str | None = field()
    variants: dict[str, ShippedVariant] = field(mapping=ShippedVariant, factory=dict)
    reference: Reference | None = field(record=Reference)
    test_images: int | None = field()
    max_drop: float | None = field()
    passed: bool | None = field()
    runtime: RuntimeInfo | None = field(record=RuntimeInfo)
    versions: dict[str, str] | None = field()
    created: str | None = field()

    def take_verdict(self, quantization: Quantization) -> None:
        """Adopt a new check's verdict: what to serve, whether int8 passed, the gate."""
        self.served, self.passed, self.max_drop = quantization.served, quantization.passed, quantization.max_drop


# ---------------------------------------------------------------------------------------------
# The gate and the serving policy


def passes(drop_points: float, max_drop: float) -> bool:
    """The gate: a variant's top-1 drop, in points, is at most `max_drop` (with GATE_EPSILON of float noise)."""
    return drop_points <= max_drop + GATE_EPSILON


def served_variant(quantization: Quantization | Mapping[str, Any]) -> str:
    """The variant the demo and the camera should serve.

    int8 whenever it is within the gate: the full-integer file is the product (it runs on every
    integer accelerator, and it is the same file everywhere), and choosing it does not hang on a
    latency measurement's noise. Otherwise the fastest (median single-image latency) of the
    variants within the gate; int8 when none is, so that the failure stays visible.
    """
    quantization = Quantization.coerce(quantization)
    variants, max_drop = quantization.variants, quantization.max_drop
    if passes(variants[run_folder.SERVED_VARIANT].drop_points, max_drop):
        return run_folder.SERVED_VARIANT
    passing = [
        (measured.latency_ms, variant)
        for variant, measured in variants.items()
        if passes(measured.drop_points, max_drop)
    ]
    return min(passing)[1] if passing else run_folder.SERVED_VARIANT


def gate_status(quantization: Quantization | Mapping[str, Any], run_dir: str | os.PathLike) -> int:
    """The end of the export and the check: the summary line, and exit status 1 with a line on stderr
    saying so when the full-integer int8 model misses the gate (0 when it passes)."""
    quantization = Quantization.coerce(quantization)
    print(quantization.summary_line())
    if quantization.passed:
        return 0
    print(quantization.gate_failure(run_dir), file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------------------------
# The float-vs-int8 table, in Markdown


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of `variant_table`: its header, a variant's cell, and the Keras reference's cell."""

    header: str
    cell: Callable[[str, VariantResult], str]
    reference: Callable[[Reference], str] = lambda reference: ""


#: What the report calls each variant.
VARIANT_NAMES = {
    "float32": "float32",
    "float16": "float16 weights",
    "dynamic": "dynamic range (int8 weights)",
    "int8": "int8 (full integer)",
    "int8_mixed": "int8 with float tensors (fallback)",
    "16x8": "16x8 (fallback)",
}


def _losers(rows: list[dict[str, Any]] | None) -> str:
    if not rows:
        return "none"
    return ", ".join(f"{row['label']} ({100 * (row['top1'] - row['reference_top1']):+.1f})" for row in rows[:3])


def _points(change: float | None) -> str:
    return formatting.NOT_AVAILABLE if change is None else f"{100 * change:+.2f}"


def _kl(value: float | None) -> str:
    return f"{value if value is not None else float('nan'):.4f}"


#: report.md's table (train/report.py): everything measured, percentages to two decimals.
REPORT_COLUMNS = (
    Column(
        "model", lambda name, measured: VARIANT_NAMES.get(name, name), lambda reference: "Keras float32 (reference)"
    ),
    Column("size", lambda name, measured: formatting.size(measured.size_bytes)),
    Column(
        "top-1",
        lambda name, measured: formatting.percent(measured.top1, 2),
        lambda reference: formatting.percent(reference.top1, 2),
    ),
    Column(
        "top-5",
        lambda name, measured: formatting.percent(measured.top5, 2),
        lambda reference: formatting.percent(reference.top5, 2),
    ),
    Column("top-1 vs Keras (points)", lambda name, measured: _points(measured.top1_change)),
    Column("agreement", lambda name, measured: formatting.percent(measured.agreement, 2)),
    Column("mean KL", lambda name, measured: _kl(measured.kl_divergence)),
    Column("median latency", lambda name, measured: formatting.milliseconds(measured.latency_ms)),
    Column("classes that lose most (points)", lambda name, measured: _losers(measured.worst_classes)),
)

#: The demo's and the Space card's shorter table: accuracy, agreement, size and latency.
PANEL_COLUMNS = (
    Column("model", lambda name, measured: name, lambda reference: "Keras float (reference)"),
    Column(
        "top-1",
        lambda name, measured: formatting.percent(measured.top1),
        lambda reference: formatting.percent(reference.top1),
    ),
    Column(
        "top-5",
        lambda name, measured: formatting.percent(measured.top5),
        lambda reference: formatting.percent(reference.top5),
    ),
    Column(
        "top-1 agreement with float",
        lambda name, measured: formatting.percent(measured.agreement),
        lambda reference: "100.0%",
    ),
    Column("size", lambda name, measured: formatting.size(measured.size_bytes) if measured.size_bytes else ""),
    Column(
        "latency",
        lambda name, measured: (
            formatting.milliseconds(measured.latency_ms) if isinstance(measured.latency_ms, (int, float)) else ""
        ),
    ),
)


def variant_table(
    quantization: Quantization | Mapping[str, Any],
    columns: Sequence[Column] = REPORT_COLUMNS,
    *,
    known_order: bool = False,
    reference_row: bool = True,
) -> str:
    """The variants of quantization.json as a Markdown table, the Keras reference first.

    `known_order`: rows in run_folder.VARIANTS order (else the file's). `reference_row`: False leaves
    the reference row out when the file has no reference measurement (the demo's panel).
    """
    quantization = Quantization.coerce(quantization)
    rows = ["| " + " | ".join(column.header for column in columns) + " |", "|" + "---|" * len(columns)]
    reference = quantization.reference
    if reference_row or reference.to_dict():
        # The reference has no file, so most of its cells are blank: written "| |", as always.
        rows.append(
            "|"
            + "|".join(f" {cell} " if cell else " " for cell in (column.reference(reference) for column in columns))
            + "|"
        )
    names = (
        [name for name in run_folder.VARIANTS if name in quantization.variants]
        if known_order
        else list(quantization.variants)
    )
    for name in names:
        rows.append("| " + " | ".join(column.cell(name, quantization.variants[name]) for column in columns) + " |")
    return "\n".join(rows)
