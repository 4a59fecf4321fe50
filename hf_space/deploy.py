"""Assemble the Hugging Face Space from an exported run, and upload it (plus, optionally, a model repository).

    python hf_space/deploy.py --run runs/NAME --repo USER/NAME [--private] [--model-repo USER/NAME]
    python hf_space/deploy.py --run runs/NAME --dry-run --out build/space    # assemble only, no upload
    cd build/space && python app.py                                          # ...and run it as a Space would

The Space folder is self-contained: app.py (hf_space/app.py), README.md (the
Space card, its sdk_version set to the Gradio installed here), requirements.txt
(no TensorFlow; gradio and ai-edge-litert pinned to the versions installed
here, the ones the folder is tested with), the demo/ and edge/ modules the
app imports (found by following its imports, so nothing is copied by hand and
the converter never travels), models/ (int8 and float32 .tflite, labels,
metadata, quantization.json, metrics.json, the report and its plots) and the
example images among the model's classes.

The token comes from $HF_TOKEN or the login cache (`hf auth login`), through
huggingface_hub.get_token(); it is never printed or logged.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
import shutil
import string
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from demo import panels
from edge.common import artifacts, command, records, run_folder
from edge.common.configuration import option
from edge.common.errors import UserError
from edge.common.versions import package_version

REPOSITORY = Path(__file__).resolve().parents[1]
SPACE_TEMPLATE = Path(__file__).resolve().parent
# Where the Space's code starts; every demo/ and edge/ module they import (transitively) is copied.
SPACE_ENTRY_POINTS = ("hf_space/app.py", "demo/app.py", "demo/ui.py")
# What a Raspberry Pi needs from the model repository: the runtime and the camera loop.
PI_ENTRY_POINTS = ("edge/classify.py", "edge/camera.py")
PROJECT_PACKAGES = ("demo", "edge")
# Never shipped: the training side (train/, with the converter and the check) needs TensorFlow
# and Keras, and nothing on the serving path may import it (docs/architecture.md).
NEVER_SHIPPED_PACKAGES = ("train",)
MARKER_FILE = ".assembled-by-deploy"  # lets a rebuild replace its own earlier output, and nothing else
# Hugging Face repository ids: owner/name, letters, digits, '-', '_', '.'; no '--' or '..'; at most 96 characters.
REPO_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_REPO_ID_LENGTH = 96


class DeployError(UserError):
    """Something a user can fix (token, permission, run without TFLite files, repo name); the message says what."""


@dataclasses.dataclass
class DeployConfig:
    """Options of `python hf_space/deploy.py`."""

    run: str | None = option(None, "the exported run folder (runs/NAME, with tflite/model_int8.tflite)", "Input")
    repo: str | None = option(None, "the Space to create or update, USER/NAME (needed unless --dry-run)", "Hub")
    private: bool = option(False, "create the Space (and model repository) private", "Hub")
    model_repo: str | None = option(
        None, "also push the model files and a model card to this model repository, USER/NAME", "Hub"
    )
    dry_run: bool = option(False, "assemble the folder(s) only; upload nothing", "Output")
    out: str | None = option(
        None,
        "folder to assemble the Space in (required with --dry-run; default: a "
        "temporary folder, removed after the upload); the model repository goes "
        "to OUT-model",
        "Output",
    )


# -- checks ---------------------------------------------------------------------------


def check_repo_id(repo_id: str, what: str) -> str:
    """`repo_id` if it is a valid user/name; a DeployError saying what is wrong otherwise."""
    if (
        not REPO_ID_PATTERN.match(repo_id)
        or "--" in repo_id
        or ".." in repo_id
        or len(repo_id) > MAX_REPO_ID_LENGTH
        or repo_id.endswith(".git")
    ):
        raise DeployError(
            f"{what} {repo_id!r} is not a Hugging Face repository id: expected USER/NAME "
            f"(letters, digits, '-', '_', '.'; at most {MAX_REPO_ID_LENGTH} characters)"
        )
    return repo_id


def find_run_files(run_dir: str | Path) -> run_folder.ModelFiles:
    """The run's model files; a DeployError naming what is missing and how to make it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DeployError(f"{run_dir}: run folder not found")
    try:
        files = run_folder.find_model_files(folder=run_dir)
    except run_folder.ModelFilesError as error:
        raise DeployError(f"{run_dir} has no TFLite files to deploy ({error})") from None
    if files.reference is None:
        raise DeployError(
            f"{run_dir}: no {run_folder.FLOAT_MODEL_FILE} beside {files.model}; the Space shows the "
            f"float model next to int8 (python train/export.py --run {run_dir})"
        )
    return files


# -- what travels ------------------------------------------------------------------------


def imported_names(path: Path) -> set[str]:
    """Every module name an import statement in the file names, at any depth (function bodies and
    `if TYPE_CHECKING:` too): `from a.b import c` gives a.b and a.b.c, since c may be a module.

    The one import walker: the Space's module closure follows it, and tests/test_architecture.py
    checks the layout's promises with it.
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def project_imports(path: Path, root: Path = REPOSITORY) -> set[str]:
    """The project modules (as paths relative to root) that the file at `path` imports."""
    found = set()
    for name in imported_names(path):
        parts = name.split(".")
        if parts[0] not in PROJECT_PACKAGES:
            continue
        for depth in range(1, len(parts) + 1):  # the package's __init__.py files come along
            base = root.joinpath(*parts[:depth])
            for candidate in (base / "__init__.py", base.with_suffix(".py")):
                if candidate.is_file():
                    found.add(candidate.relative_to(root).as_posix())
    return found


def module_closure(entry_points: Iterable[str], root: Path = REPOSITORY) -> list[str]:
    """Every project module reachable by imports from the entry points (relative paths, sorted)."""
    pending, seen = list(entry_points), set()
    while pending:
        relative = pending.pop()
        if relative in seen:
            continue
        seen.add(relative)
        pending.extend(project_imports(root / relative, root) - seen)
    return sorted(path for path in seen if path.split("/")[0] in PROJECT_PACKAGES)


def check_no_tensorflow(modules: Iterable[str], root: Path = REPOSITORY) -> None:
    """Refuse to ship the converter or any module that imports TensorFlow or Keras."""
    for relative in modules:
        if relative.split("/")[0] in NEVER_SHIPPED_PACKAGES:
            raise DeployError(
                f"{relative} would be shipped, but it is training-side code that imports TensorFlow; "
                "the serving code must not import it"
            )
        tree = ast.parse((root / relative).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            imported = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(name.split(".")[0] in ("tensorflow", "keras", "tf_keras") for name in imported):
                raise DeployError(f"{relative} imports {imported[0]}; the Space must run without TensorFlow")


def _prepare_folder(folder: Path) -> None:
    """An empty folder to assemble in; an earlier output of this script is replaced, anything else is refused."""
    if folder.exists():
        if not folder.is_dir() or (any(folder.iterdir()) and not (folder / MARKER_FILE).is_file()):
            raise DeployError(f"{folder} exists and was not made by this script; choose an empty or new --out")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER_FILE).write_text("Assembled by hf_space/deploy.py; rebuilt on each run.\n")


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


def _copy_code(modules: Iterable[str], folder: Path) -> None:
    for relative in modules:
        _copy(REPOSITORY / relative, folder / relative)


def _copy_model_files(files: run_folder.ModelFiles, target: Path) -> list[str]:
    """The served model (int8 unless metadata.json names a passing fallback), the int8 file always,
    float32, labels, metadata, quantization, metrics, report and its plots."""
    copied = []
    int8 = files.model.parent / run_folder.INT8_MODEL_FILE
    for path in (
        files.model,
        int8 if int8.is_file() and int8 != files.model else None,
        files.reference,
        files.labels,
        files.metadata,
        files.quantization,
        files.metrics,
        files.report,
    ):
        if path is not None:
            _copy(path, target / path.name)
            copied.append(path.name)
    if files.report is not None:
        for image in panels.report_images(files.report):
            relative = image.relative_to(files.report.parent.resolve()).as_posix()
            _copy(image, target / relative)
            copied.append(relative)
    return copied


def _requirements() -> str:
    """hf_space/requirements.txt with gradio and ai-edge-litert pinned to the versions installed here,
    the ones this folder is assembled and tested with."""
    text = (SPACE_TEMPLATE / "requirements.txt").read_text(encoding="utf-8")
    for distribution in ("gradio", "ai-edge-litert"):
        version = package_version(distribution)
        if version:
            text = re.sub(rf"^{re.escape(distribution)}==\S+$", f"{distribution}=={version}", text, flags=re.MULTILINE)
    return text


# How the card names the datasets the project knows; any other (a folder of images) goes by its own name.
DATASET_TITLES = {
    "cifar100": "CIFAR-100",
    "cifar10": "CIFAR-10",
    "smoke": "smoke-test",
    run_folder.STARTER_DATASET: "ImageNet",
}
SHORT_DESCRIPTION_LIMIT = 60  # characters: the Hub refuses a longer Space description
TRAINING_WORDS = {"imagenet": "fine-tuned from ImageNet weights", "none": "trained from scratch"}


def card_facts(files: run_folder.ModelFiles) -> dict[str, str]:
    """What the Space card says about this run, each from the run's own files (metadata, config, quantization)."""
    metadata = records.read(records.ModelMetadata, files.metadata) if files.metadata else records.ModelMetadata()
    quantization = records.read(records.Quantization, files.quantization) if files.quantization else None
    config_path = files.labels.parent.parent / run_folder.CONFIG_FILE  # runs/NAME/config.json, when deployed from a run
    config = artifacts.read_json(config_path) if config_path.is_file() else {}
    dataset = str(metadata.dataset or config.get("dataset") or "unknown")
    backbone = str(metadata.model or config.get("model") or "unknown")
    title_dataset = DATASET_TITLES.get(dataset, Path(dataset).name)
    training = TRAINING_WORDS.get(str(config.get("weights")), "trained")
    starter = dataset == run_folder.STARTER_DATASET
    class_count = len(artifacts.read_labels(files.labels))
    height, width = (metadata.input_size or ["?", "?"])[:2]
    short = f"{backbone} on {title_dataset}, int8 TFLite vs float32"
    return {
        "title": f"{title_dataset} Edge Classifier",
        "short_description": short
        if len(short) <= SHORT_DESCRIPTION_LIMIT
        else short[: SHORT_DESCRIPTION_LIMIT - 3] + "...",
        "dataset_tag": _tag(title_dataset),
        "model_tag": _tag(backbone),
        "model_sentence": (
            f"the ImageNet-trained {backbone} with its own {class_count}-class head (published "
            "weights, not trained by this project),"
            if starter
            else f"the {backbone} model, {training} on {title_dataset} ({class_count} classes),"
        ),
        "class_count": str(class_count),
        "input_size": f"{height} x {width}",
        "measurements": (
            _measured(quantization, metadata, starter)
            if quantization and quantization.to_dict()
            else "_Not measured: the run has no quantization.json._"
        ),
    }


def _measured(quantization: records.Quantization, metadata: records.ModelMetadata, starter: bool = False) -> str:
    """The float-vs-int8 table of quantization.json, with how many test images it was measured on."""
    images = metadata.test_images
    source = f"On {images} test images, by `train/export.py`" if isinstance(images, int) else "By `train/export.py`"
    photos = quantization.photos
    if starter and isinstance(photos, dict):  # Photos without ImageNet labels: float's sure answers are the labels.
        source = (
            f"On the {photos.get('confident_views')} views of real photos that the float model is sure of, "
            "labelled with its own answers (int8 top-1 is its agreement with float; over all "
            f"{photos.get('views')} views it agrees on {100 * float(photos.get('agreement', 0)):.1f}%), "
            "by `train/pretrained.py`"
        )
    return f"{source} (latency on the machine that exported the run):\n\n{panels.quantization_table(quantization)}"


def _tag(name: str) -> str:
    """A Hub tag from a name: lower case, letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "model"


def _space_card(files: run_folder.ModelFiles, repo_id: str | None, model_repo: str | None) -> str:
    """hf_space/README.md filled in from the run (card_facts), with sdk_version = the installed Gradio
    and the model repository in `models:`."""
    text = string.Template((SPACE_TEMPLATE / "README.md").read_text(encoding="utf-8")).substitute(card_facts(files))
    gradio_version = package_version("gradio")
    if gradio_version:
        text = re.sub(r"^sdk_version:.*$", f"sdk_version: {gradio_version}", text, count=1, flags=re.MULTILINE)
    models = f"models:\n  - {model_repo}" if model_repo else "models: []"
    text = re.sub(r"^models:.*$", models, text, count=1, flags=re.MULTILINE)
    if repo_id:
        text = text.replace('Client("SPACE_ID")', f'Client("{repo_id}")')
    return text


def assemble_space(
    files: run_folder.ModelFiles, folder: str | Path, repo_id: str | None = None, model_repo: str | None = None
) -> dict[str, Any]:
    """Write the self-contained Space folder; returns what went in."""
    folder = Path(folder)
    modules = module_closure(SPACE_ENTRY_POINTS)
    modules = [path for path in modules if path != "hf_space/app.py"]
    check_no_tensorflow(modules + ["hf_space/app.py"])
    _prepare_folder(folder)
    _copy(SPACE_TEMPLATE / "app.py", folder / "app.py")
    (folder / "requirements.txt").write_text(_requirements(), encoding="utf-8")
    (folder / "README.md").write_text(_space_card(files, repo_id, model_repo), encoding="utf-8")
    _copy_code(modules, folder)
    model_files = _copy_model_files(files, folder / "models")
    if repo_id and files.report is not None:
        # Hugging Face renders the Space's copy of the report, plots included; the page links to it.
        metadata = artifacts.read_json(folder / "models" / run_folder.METADATA_FILE) if files.metadata else {}
        metadata["report_url"] = f"https://huggingface.co/spaces/{repo_id}/blob/main/models/{run_folder.REPORT_FILE}"
        artifacts.write_json(folder / "models" / run_folder.METADATA_FILE, metadata)
    labels = artifacts.read_labels(files.labels)
    examples = panels.example_images(labels)
    for path in examples:
        _copy(path, folder / "demo" / "examples" / path.relative_to(panels.EXAMPLES_FOLDER))
    if examples:
        _copy(panels.EXAMPLES_FOLDER / "SOURCES.md", folder / "demo" / "examples" / "SOURCES.md")
    return {
        "folder": str(folder),
        "modules": modules,
        "models": model_files,
        "examples": [path.relative_to(panels.EXAMPLES_FOLDER).as_posix() for path in examples],
    }


def model_card(files: run_folder.ModelFiles, model_repo: str) -> str:
    """README.md of the model repository: what the model is, its metrics, the quantization table, the Pi recipe."""
    metadata = records.read(records.ModelMetadata, files.metadata) if files.metadata else records.ModelMetadata()
    quantization = records.read(records.Quantization, files.quantization) if files.quantization else None
    metrics = records.read(records.Metrics, files.metrics) if files.metrics else records.Metrics()
    labels = artifacts.read_labels(files.labels)
    dataset = metadata.dataset or "unknown"
    backbone = metadata.model or "unknown"
    height, width = (metadata.input_size or ["?", "?"])[:2]
    metric_names = {"top1": "top-1 accuracy", "top5": "top-5 accuracy", "loss": "cross-entropy loss"}
    metric_rows = "\n".join(
        f"| {label} | {getattr(metrics, name) * 100:.2f}% |" if name != "loss" else f"| {label} | {metrics.loss:.4f} |"
        for name, label in metric_names.items()
        if isinstance(getattr(metrics, name), (int, float))
    )
    if isinstance(metrics.samples, int):
        metric_rows += f"\n| test images | {metrics.samples} |"
    quantization_section = (
        panels.quantization_table(quantization)
        if quantization and quantization.to_dict()
        else "_No quantization.json in the run: the variants were not measured._"
    )
    return f"""---
license: apache-2.0
library_name: tflite
pipeline_tag: image-classification
tags:
  - tflite
  - int8
  - quantization
  - raspberry-pi
  - {dataset}
---

# {model_repo.split("/")[1]}: {backbone} on {dataset}, int8 TFLite

An image classifier for the {len(labels)} classes of `{dataset}` ({backbone} backbone), exported to
TensorFlow Lite. `model_int8.tflite` is fully integer (uint8 input, {height}x{width} RGB pixels, no
outside normalization: resizing and normalization are inside the graph); `model_float32.tflite` is
the float model it was measured against. Class names are in `labels.txt` (output order), the input
size and provenance in `metadata.json`.

## Test-set metrics (float model, `metrics.json`)

| metric | value |
|---|---|
{metric_rows or "| (none recorded) | |"}

## Float vs int8 (`quantization.json`)

{quantization_section}

## Run it on a Raspberry Pi (no TensorFlow)

On Raspberry Pi OS Bookworm, 64-bit (Python 3.11):

```bash
python3 -m venv ~/classifier && . ~/classifier/bin/activate
pip install ai-edge-litert numpy Pillow opencv-python-headless   # or: sudo apt install python3-picamera2
pip install huggingface_hub
hf download {model_repo} --local-dir classifier && cd classifier
python -m edge.runtime --model model_int8.tflite photo.jpg          # top-5 for one photo
python -m edge.camera --model model_int8.tflite --headless --threads 4   # live, from the camera
```

`edge/` here is the project's TensorFlow-free runtime (numpy, Pillow, a TFLite runtime), copied
from the training repository with the model.
"""


def assemble_model_repo(files: run_folder.ModelFiles, folder: str | Path, model_repo: str) -> dict[str, Any]:
    """The model repository's folder: model files, the runtime for a Pi, the model card."""
    folder = Path(folder)
    modules = module_closure(PI_ENTRY_POINTS)
    check_no_tensorflow(modules)
    _prepare_folder(folder)
    model_files = _copy_model_files(files, folder)
    _copy_code(modules, folder)
    (folder / "README.md").write_text(model_card(files, model_repo), encoding="utf-8")
    return {"folder": str(folder), "modules": modules, "models": model_files}


# -- upload ----------------------------------------------------------------------------------


def get_token() -> str:
    """The Hugging Face token from $HF_TOKEN or the login cache; a DeployError when there is none."""
    import huggingface_hub  # Only an upload needs it (the hub extra); --dry-run does not.

    token = huggingface_hub.get_token()
    if not token:
        raise DeployError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access)")
    return token


def upload(folder: Path, repo_id: str, repo_type: str, private: bool, token: str, api: Any = None) -> str:
    """Create the repository if needed and upload the folder; the repository's URL."""
    import huggingface_hub  # Only an upload needs it (the hub extra); --dry-run does not.
    from huggingface_hub import errors as hub_errors

    api = api or huggingface_hub.HfApi(token=token)
    space_options = {"space_sdk": "gradio"} if repo_type == "space" else {}
    try:
        url = api.create_repo(
            repo_id, repo_type=repo_type, exist_ok=True, private=private, token=token, **space_options
        )
        api.upload_folder(
            repo_id=repo_id,
            repo_type=repo_type,
            folder_path=str(folder),
            token=token,
            commit_message="Deploy from hf_space/deploy.py",
            ignore_patterns=[MARKER_FILE],
        )
    except hub_errors.HfHubHTTPError as error:
        status = error.response.status_code if getattr(error, "response", None) is not None else None
        if status == 401:
            raise DeployError(
                f"Hugging Face refused the token (401 Unauthorized) for {repo_id}: it is invalid or "
                "expired; make a new one with write access"
            ) from None
        if status == 403:
            raise DeployError(
                f"no permission to write to {repo_id} (403 Forbidden): the token needs write access, "
                f"and {repo_id.split('/')[0]!r} must be your user name or an organization you can "
                "write to"
            ) from None
        detail = getattr(error, "server_message", None) or type(error).__name__
        raise DeployError(f"upload of {folder} to {repo_id} failed (HTTP {status}): {detail}") from None
    except network_errors() as error:
        reason = (str(error).strip().splitlines() or [""])[0]
        raise DeployError(
            f"cannot reach the Hugging Face Hub to upload {repo_id} ({type(error).__name__}"
            + (f": {reason}" if reason else "")
            + "); check the network connection, "
            "or assemble the folder alone with --dry-run --out FOLDER"
        ) from None
    return str(url)


def network_errors() -> tuple[type[BaseException], ...]:
    """What the Hub client raises when the network is down or too slow, whichever HTTP library it uses.

    huggingface_hub 1.x and later speak httpx (2.x: httpx2), earlier ones requests; each
    raises its own TransportError / ConnectionError (a refused connection, a failed DNS
    lookup, a timeout); HF_HUB_OFFLINE=1 raises OfflineModeIsEnabled. An HTTP status is
    not among them: that is HfHubHTTPError, handled above.
    """
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]  # raw socket failures
    for module_name, names in (
        ("httpx2", ("TransportError",)),
        ("httpx", ("TransportError",)),
        ("requests", ("ConnectionError", "Timeout")),
        ("huggingface_hub.errors", ("OfflineModeIsEnabled",)),
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found.extend(getattr(module, name) for name in names if isinstance(getattr(module, name, None), type))
    return tuple(found)


def run(config: DeployConfig, api: Any = None) -> dict[str, Any]:
    """Assemble (and unless dry_run, upload) the Space and the optional model repository."""
    if not config.run:
        raise DeployError("--run is required: the exported run folder (runs/NAME)")
    if config.repo:
        check_repo_id(config.repo, "--repo")
    elif not config.dry_run:
        raise DeployError("--repo USER/NAME is required to upload (or use --dry-run --out FOLDER)")
    if config.model_repo:
        check_repo_id(config.model_repo, "--model-repo")
    if config.dry_run and not config.out:
        raise DeployError("--dry-run needs --out FOLDER: where to assemble the Space")
    files = find_run_files(config.run)
    token = None if config.dry_run else get_token()  # before any work: a missing token fails fast

    with tempfile.TemporaryDirectory(prefix="space-") as scratch:
        space_folder = Path(config.out) if config.out else Path(scratch) / "space"
        model_folder = space_folder.with_name(space_folder.name + "-model")
        result: dict[str, Any] = {"space": assemble_space(files, space_folder, config.repo, config.model_repo)}
        if config.model_repo:
            result["model"] = assemble_model_repo(files, model_folder, config.model_repo)
        if not config.dry_run:
            if config.model_repo:
                result["model_url"] = upload(model_folder, config.model_repo, "model", config.private, token, api)
            result["space_url"] = upload(space_folder, config.repo, "space", config.private, token, api)
    return result


def _summary(config: DeployConfig, result: dict) -> str:
    """What was assembled, what was uploaded, and how to try a dry run."""
    space = result["space"]
    lines = [
        f"assembled {space['folder']}: {len(space['modules'])} modules, models {', '.join(space['models'])}, "
        f"{len(space['examples'])} examples"
    ]
    if "model" in result:
        lines.append(f"assembled {result['model']['folder']} (model repository)")
    lines.extend(f"uploaded: {result[key]}" for key in ("model_url", "space_url") if key in result)
    if config.dry_run:
        lines.append(f"dry run: nothing uploaded. Try it: cd {space['folder']} && python app.py")
    return "\n".join(lines)


COMMAND = command.Command(
    name="deploy",
    prog="python hf_space/deploy.py",
    description=__doc__.split("\n\n")[0],
    config_class=DeployConfig,
    run=run,
    render=_summary,
)


main = command.entry_point(COMMAND)


if __name__ == "__main__":
    raise SystemExit(main())
