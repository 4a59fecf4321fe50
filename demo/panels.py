"""The demo page's text, without Gradio: the Markdown panels, the report and its images, the example photos.

demo/ui.py lays these out on the page; hf_space/deploy.py puts the same
quantization table in the Space and model cards and copies the same report
images and examples into the Space, so it needs no Gradio to do so.
Standard library and edge/common only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from edge.common import formatting, records, run_folder

if TYPE_CHECKING:  # Only for annotations: loading models (a TFLite runtime) is not needed to write text.
    from demo.models import DemoModels

EXAMPLES_FOLDER = Path(__file__).resolve().parent / "examples"
EXAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# A Markdown image link to a relative path: ![alt](plots/curves.png)
IMAGE_LINK_PATTERN = re.compile(r"\]\((?!https?://|/)([^)\s]+\.(?:png|jpg|jpeg|svg))\)")


def quantization_markdown(models: DemoModels) -> str:
    """The page's float-vs-int8 panel: the test-set table, or why it is missing."""
    quantization = models.quantization
    if not quantization:
        return "_No quantization.json next to this model: the float-vs-int8 test-set numbers are not available._"
    if "error" in quantization:
        return f"_quantization.json could not be read: {quantization['error']}_"
    try:
        table = quantization_table(quantization)
    except records.RecordError as error:  # A side file that only decorates the page: reported, not fatal.
        return f"_quantization.json could not be read: {error}_"
    return "Measured on the test set by `train/export.py`:\n\n" + table


def quantization_table(quantization: records.Quantization | dict) -> str:
    """float32 vs int8 (and the other variants) on the test set, from quantization.json's fractions, as Markdown:
    the record's table (edge/common/records.py, PANEL_COLUMNS) and the gate's verdict."""
    quantization = records.Quantization.coerce(quantization)
    passed = quantization.passed
    verdict = (
        ""
        if passed is None
        else f"\n\nThe int8 gate (top-1 at most {quantization.max_drop} points below the float model) "
        f"{'passed' if passed else 'FAILED'}."
    )
    return records.variant_table(quantization, records.PANEL_COLUMNS, known_order=True, reference_row=False) + verdict


def about_markdown(models: DemoModels, report_url: str | None = None) -> str:
    """Dataset, backbone, test accuracy, model size and the link to the report."""
    metadata = models.metadata
    quantization = _record(records.Quantization, models.quantization)
    served = quantization.variants.get(run_folder.variant_of(models.files.model))
    int8_top1 = served.top1 if served is not None else None
    float_top1 = _record(records.Metrics, models.metrics).top1 or quantization.reference.top1
    lines = [
        f"- **Dataset:** {metadata.get('dataset', 'unknown')} ({len(models.model.labels)} classes)",
        f"- **Backbone:** {metadata.get('model', 'unknown')}",
        f"- **Test accuracy (top-1):** {formatting.percent(int8_top1) if int8_top1 is not None else 'not measured'} "
        f"for {run_folder.variant_of(models.files.model)}"
        + (f", {formatting.percent(float_top1)} for the float model" if float_top1 is not None else ""),
        f"- **Model size:** {formatting.size(models.files.model.stat().st_size)} ({models.files.model.name})"
        + (f", {formatting.size(models.files.reference.stat().st_size)} for float32" if models.files.reference else ""),
        f"- **Input:** {models.model.input_size[0]}x{models.model.input_size[1]} pixels; "
        "a photo is centre-cropped and shrunk to that, like the training images.",
    ]
    if report_url:
        lines.append(f"- **Report:** [{report_url}]({report_url})")
    elif models.files.report:
        lines.append('- **Report:** the training report is below ("Full report").')
    return "\n".join(lines)


def _record(record_type: type, values: dict | None) -> records.Record:
    """The record of a side file the page only shows; an empty one when it is missing or malformed."""
    try:
        return record_type.coerce(values or {})
    except records.RecordError:
        return record_type()


def report_markdown(models: DemoModels) -> str | None:
    """report.md with its relative image links pointed at Gradio's file route (see allowed_paths)."""
    if models.files.report is None:
        return None
    text = models.files.report.read_text(encoding="utf-8", errors="replace")
    folder = models.files.report.parent.resolve()
    return IMAGE_LINK_PATTERN.sub(lambda match: f"](/gradio_api/file={folder / match.group(1)})", text)


def report_images(report: Path) -> list[Path]:
    """The image files report.md links to by relative path, inside its folder, that exist."""
    folder = report.parent.resolve()
    found = []
    for link in IMAGE_LINK_PATTERN.findall(report.read_text(encoding="utf-8", errors="replace")):
        path = (folder / link).resolve()
        if path.is_file() and path.is_relative_to(folder):
            found.append(path)
    return found


def example_images(labels: list[str], folder: Path = EXAMPLES_FOLDER) -> list[Path]:
    """Example images named after the model's classes (`rocket.jpg` for "rocket"), from folder and its subfolders."""
    wanted = set(labels)
    found = sorted(
        path for path in folder.rglob("*") if path.suffix.lower() in EXAMPLE_SUFFIXES and path.stem in wanted
    )
    return found
