"""The float-vs-int8 table of report.md, rendered from quantization.json (standard library only).

    python edge/quantization_report.py --run runs/NAME   # rewrite the section in runs/NAME/report.md

`render_markdown(quantization)` is used by train/evaluate.py's report writer and by
`update_report`, which edge/convert.py calls after the check: it replaces the text
between `<!-- quantization:start -->` and `<!-- quantization:end -->` in report.md,
appends the section when the markers are missing, and writes a minimal report when
there is none. Percentages here; fractions in quantization.json.
"""
from __future__ import annotations

if __package__ in (None, ""):  # Run as a script: make the repository root importable.
    import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
from pathlib import Path
from typing import Sequence

from edge import artifacts

START, END = "<!-- quantization:start -->", "<!-- quantization:end -->"
HEADING = "## Float vs int8 (TFLite)"
REPORT_FILE = "report.md"
QUANTIZATION_FILE = "quantization.json"
#: Float tensors named in the report before "and N more" (all are in quantization.json).
LISTED_TENSORS = 8
VARIANT_NAMES = {"float32": "float32", "float16": "float16 weights", "dynamic": "dynamic range (int8 weights)",
                 "int8": "int8 (full integer)"}
SCHEMES = {"int8": "plain full-integer post-training quantization",
           "int8-selective": "full-integer with the worst tensors kept in float (selective quantization)",
           "16x8": "int16 activations with int8 weights (16x8)"}


def _percent(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def _size(size_bytes: int | None) -> str:
    if size_bytes is None:
        return "n/a"
    return f"{size_bytes / 2**20:.2f} MiB" if size_bytes >= 2**20 else f"{size_bytes / 2**10:.1f} KiB"


def _milliseconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g} ms"


def _losers(rows: list[dict]) -> str:
    if not rows:
        return "none"
    return ", ".join(f"{row['label']} ({100 * (row['top1'] - row['reference_top1']):+.1f})" for row in rows[:3])


def summary_line(quantization: dict) -> str:
    """One line for a terminal: the int8 model against the float one and the gate's verdict."""
    int8 = quantization["variants"]["int8"]
    verdict = "PASSED" if quantization["passed"] else "FAILED"
    return (f"int8 top-1 {_percent(int8['top1'])} vs Keras float {_percent(quantization['reference']['top1'])}: "
            f"drop {int8['drop_points']:.2f} points, gate {quantization['max_drop']} points: {verdict} "
            f"({int8.get('scheme', 'int8')}, {quantization['test_images']} test images)")


def render_markdown(quantization: dict) -> str:
    """The section's body: the table of variants, the gate, and how the int8 model was made."""
    reference = quantization["reference"]
    lines = ["| model | size | top-1 | top-5 | top-1 vs Keras (points) | agreement | mean KL | "
             "median latency | classes that lose most (points) |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| Keras float32 (reference) | | {_percent(reference['top1'])} | {_percent(reference.get('top5'))} "
             "| | | | | |"]
    for variant, measured in quantization["variants"].items():
        lines.append(
            f"| {VARIANT_NAMES.get(variant, variant)} | {_size(measured.get('size_bytes'))} "
            f"| {_percent(measured['top1'])} | {_percent(measured.get('top5'))} "
            f"| {100 * measured['top1_change']:+.2f} | {_percent(measured.get('agreement'))} "
            f"| {measured.get('kl_divergence', float('nan')):.4f} | {_milliseconds(measured.get('latency_ms'))} "
            f"| {_losers(measured.get('worst_classes', []))} |")
    runtime = quantization.get("runtime", {})
    threads = runtime.get("threads")
    lines += ["", f"Measured on all {quantization['test_images']} test images through "
              f"{runtime.get('name', 'the TFLite runtime')} {runtime.get('version') or ''}".rstrip()
              + f"; latency: median of {runtime.get('latency_runs', 'n/a')} single-image interpreter calls, "
              + (f"{threads} threads" if threads else "the runtime's default threads") + ".", ""]
    int8 = quantization["variants"]["int8"]
    verdict = "**passed**" if quantization["passed"] else "**FAILED**"
    noise = ""
    if "broken" in int8:
        noise = (f" ({int8['broken']} test images it gets wrong where the Keras model is right, {int8['fixed']} "
                 f"the other way; standard error of the drop {int8['drop_standard_error_points']:.2f} points)")
    lines.append(f"Gate: the int8 model may lose at most {quantization['max_drop']} points of top-1 against "
                 f"the Keras model; it loses {int8['drop_points']:.2f}{noise}: {verdict}.")
    lines += _search_lines(quantization)
    return "\n".join(lines) + "\n"


def _search_lines(quantization: dict) -> list[str]:
    int8 = quantization["variants"]["int8"]
    scheme = int8.get("scheme", "int8")
    lines = ["", f"int8 model: {SCHEMES.get(scheme, scheme)}."]
    search = quantization.get("int8_search", {})
    attempts = [attempt for attempt in search.get("attempts", []) if "error" not in attempt]
    if len(attempts) > 1:
        lines.append("Tried, in order (drop in points): " + "; ".join(_attempt_text(attempt) for attempt in attempts)
                     + ".")
    layers = int8.get("float_layers", [])
    if layers:
        names = ", ".join(f"`{layer['op']}` {layer['tensor'].split(';')[0]}" for layer in layers[:LISTED_TENSORS])
        more = f" and {len(layers) - LISTED_TENSORS} more" if len(layers) > LISTED_TENSORS else ""
        lines.append(f"Ops that stay float in the shipped file ({len(layers)}): {names}{more}.")
        plain = next((attempt for attempt in attempts if attempt["scheme"] == "int8"), None)
        if plain and plain.get("size_bytes") and plain.get("latency_ms") and int8.get("latency_ms"):
            lines.append(f"Cost against plain int8: size {_size(plain['size_bytes'])} -> {_size(int8['size_bytes'])}, "
                         f"latency {_milliseconds(plain['latency_ms'])} -> {_milliseconds(int8['latency_ms'])}.")
    elif scheme != "16x8":
        lines.append("Every op runs in integer arithmetic (uint8 input, uint8 output).")
    return lines


def _attempt_text(attempt: dict) -> str:
    count = len(attempt.get("float_tensors", []))
    name = attempt["scheme"] + (f" with {count} float tensors" if count else "")
    if "drop_points" in attempt:
        return f"{name}: test {attempt['drop_points']:.2f}, agreement {_percent(attempt.get('agreement'), 1)}"
    return f"{name}: validation {attempt.get('val_drop_points', float('nan')):.2f}"


def update_report(run_dir: str | Path, quantization: dict | None = None) -> Path:
    """Put the rendered section into <run_dir>/report.md between the markers; return the path."""
    run_dir = Path(run_dir)
    if quantization is None:
        quantization = artifacts.read_json(run_dir / QUANTIZATION_FILE)
    section = f"{START}\n{render_markdown(quantization).strip()}\n{END}"
    path = run_dir / REPORT_FILE
    text = path.read_text(encoding="utf-8") if path.exists() else f"# Run `{run_dir.name}`\n"
    start, end = text.find(START), text.find(END)
    if start != -1 and end > start:
        text = text[:start] + section + text[end + len(END):]
    else:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n\n{section}\n"
    return artifacts.write_atomic(path, text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python edge/quantization_report.py", description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, metavar="DIR", help="run directory holding quantization.json")
    arguments = parser.parse_args(argv)
    try:
        path = update_report(arguments.run)
    except artifacts.ArtifactError as error:
        print(f"error: {error}")
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
