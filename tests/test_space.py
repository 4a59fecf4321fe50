"""hf_space/: the folder deploy.py assembles, its Space card, the upload path (a fake HfApi, no network),
and the folder started the way a Space starts it.

    .venv/bin/pytest tests/test_space.py -x -q                  # all; the fresh-venv test installs from PyPI once
    .venv/bin/pytest tests/test_space.py -x -q -m "not slow"

Two ways of starting the assembled folder:
- in this venv, isolated (python -s -E, cwd = the folder, PYTHON* variables dropped), with TensorFlow
  and Keras made unimportable and every demo/edge module checked to come from the folder itself;
- in a fresh venv made from the folder's own requirements.txt (`python -m venv` + `pip install -r`),
  which proves the requirements are complete and TensorFlow-free. It is cached under
  test-artifacts/ by the hash of requirements.txt, so only the first run pays for the install.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import gradio
import huggingface_hub
import pytest
import yaml

from demo import local_server, panels, ui
from edge.common import artifacts, run_folder
from hf_space import deploy

REPOSITORY = Path(__file__).resolve().parents[1]
SPACE_REPO = "tester/cifar-edge"
MODEL_REPO = "tester/cifar-edge-model"
FAKE_TOKEN = "hf_fake_token_for_tests_0123456789"
SHORT_DESCRIPTION_LIMIT = 60  # characters; the Hub rejects longer Space descriptions
VENV_INSTALL_TIMEOUT_S = 1800  # a cold `pip install gradio ...` took 2.3 minutes here on a busy machine


@pytest.fixture(scope="module")
def assembled(smoke_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy") / "space"
    config = deploy.DeployConfig(run=str(smoke_run), repo=SPACE_REPO, model_repo=MODEL_REPO, dry_run=True, out=str(out))
    return deploy.run(config)


def _front_matter(readme: Path) -> dict:
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_dry_run_assembles_a_self_contained_space(assembled, smoke_run):
    space = Path(assembled["space"]["folder"])
    for name in (
        "app.py",
        "README.md",
        "requirements.txt",
        "demo/ui.py",
        "demo/app.py",
        "edge/runtime.py",
        "edge/preprocess.py",
        "models/model_int8.tflite",
        "models/model_float32.tflite",
        "models/labels.txt",
        "models/metadata.json",
        "models/quantization.json",
        "models/report.md",
    ):
        assert (space / name).is_file(), name
    assert (space / "app.py").read_bytes() == (REPOSITORY / "hf_space" / "app.py").read_bytes()
    for module in assembled["space"]["modules"]:  # copies, byte for byte
        assert (space / module).read_bytes() == (REPOSITORY / module).read_bytes()
    shipped = {path.relative_to(space).as_posix() for path in space.rglob("*.py")}
    assert not any(path.split("/")[0] in deploy.NEVER_SHIPPED_PACKAGES for path in shipped)
    assert "demo/local_server.py" not in shipped
    assert not [path for path in space.rglob("*.tflite") if path.parent.name != "models"]
    # The report's plots travel with it, and the page links to the Space's copy.
    assert (space / "models" / "plots" / "confusion.png").is_file()
    assert artifacts.read_json(space / "models" / "metadata.json")["report_url"].startswith(
        f"https://huggingface.co/spaces/{SPACE_REPO}/"
    )
    # Examples among the smoke classes only, with their sources.
    labels = artifacts.read_labels(smoke_run / "tflite" / "labels.txt")
    examples = [path for path in (space / "demo" / "examples").rglob("*.png")]
    assert examples and all(path.stem in labels for path in examples)
    assert (space / "demo" / "examples" / "SOURCES.md").is_file()


def test_space_card_and_requirements(assembled):
    space = Path(assembled["space"]["folder"])
    card = _front_matter(space / "README.md")
    assert card["sdk"] == "gradio" and card["app_file"] == "app.py"
    assert str(card["sdk_version"]) == gradio.__version__
    assert card["python_version"] == "3.11"
    assert card["title"] and card["emoji"] and card["colorFrom"] and card["colorTo"]
    assert len(card["short_description"]) <= SHORT_DESCRIPTION_LIMIT
    assert "tflite" in card["tags"] and card["models"] == [MODEL_REPO]
    requirements = [line.split("#")[0].strip() for line in (space / "requirements.txt").read_text().splitlines()]
    requirements = [line for line in requirements if line]
    assert f"gradio=={gradio.__version__}" in requirements
    assert any(line.startswith("ai-edge-litert") for line in requirements)
    assert not [line for line in requirements if line.lower().startswith(("tensorflow", "keras", "tf-"))]
    # The repository's templates: no model until deploy.py is told one; the card's sdk_version is the
    # gradio its requirements pin (deploy.py updates both to the installed version).
    template = _front_matter(REPOSITORY / "hf_space" / "README.md")
    assert template["models"] == []
    assert f"gradio=={template['sdk_version']}" in (REPOSITORY / "hf_space" / "requirements.txt").read_text()


def test_space_card_is_written_from_the_run(assembled, smoke_run):
    """The card describes the run it ships (the smoke se_cnn here), with its measured numbers, not a fixed text."""
    readme = (Path(assembled["space"]["folder"]) / "README.md").read_text(encoding="utf-8")
    card = _front_matter(Path(assembled["space"]["folder"]) / "README.md")
    assert "EfficientNet" not in readme and "CIFAR-100" not in readme and "$" not in readme
    assert card["title"] == "smoke-test Edge Classifier" and "se-cnn" in card["tags"] and "smoke-test" in card["tags"]
    assert card["short_description"] == "se_cnn on smoke-test, int8 TFLite vs float32"
    classes = len(artifacts.read_labels(smoke_run / "tflite" / "labels.txt"))
    assert f"the se_cnn model, trained from scratch on smoke-test ({classes} classes)," in " ".join(readme.split())
    quantization = artifacts.read_json(smoke_run / "quantization.json")
    assert panels.quantization_table(quantization) in readme  # the measured test-set numbers, as on the page
    assert f"On {artifacts.read_json(smoke_run / 'tflite' / 'metadata.json')['test_images']} test images" in readme


def test_space_card_names_a_fine_tuned_imagenet_backbone(smoke_run, tmp_path):
    """The words follow the run's config: ImageNet weights are "fine-tuned", CIFAR-100 keeps its name."""
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run / "tflite", run_dir / "tflite")
    metadata = artifacts.read_json(run_dir / "tflite" / "metadata.json")
    artifacts.write_json(
        run_dir / "tflite" / "metadata.json", {**metadata, "dataset": "cifar100", "model": "efficientnet_b0"}
    )
    artifacts.write_json(run_dir / "config.json", {"weights": "imagenet"})
    facts = deploy.card_facts(run_folder.find_model_files(folder=run_dir))
    assert facts["title"] == "CIFAR-100 Edge Classifier" and facts["model_tag"] == "efficientnet-b0"
    assert facts["model_sentence"].startswith(
        "the efficientnet_b0 model, fine-tuned from ImageNet weights on CIFAR-100"
    )
    assert facts["measurements"].startswith("_Not measured")  # no quantization.json in this copy


def test_model_repository_folder_and_card(assembled):
    folder = Path(assembled["model"]["folder"])
    for name in (
        "README.md",
        "model_int8.tflite",
        "model_float32.tflite",
        "labels.txt",
        "metadata.json",
        "quantization.json",
        "edge/runtime.py",
        "edge/camera.py",
        "edge/preprocess.py",
    ):
        assert (folder / name).is_file(), name
    assert not (folder / "train").exists()
    card = (folder / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---\n")[1])
    assert metadata["pipeline_tag"] == "image-classification" and "tflite" in metadata["tags"]
    metrics = artifacts.read_json(folder / "metrics.json")
    assert f"| top-1 accuracy | {metrics['top1'] * 100:.2f}% |" in card
    assert "| int8 |" in card and "Raspberry Pi" in card and f"hf download {MODEL_REPO}" in card


def test_module_closure_follows_imports_and_refuses_tensorflow(tmp_path):
    modules = deploy.module_closure(deploy.SPACE_ENTRY_POINTS)
    assert {"demo/ui.py", "demo/live.py", "edge/runtime.py", "edge/preprocess.py", "edge/__init__.py"} <= set(modules)
    (tmp_path / "edge").mkdir()
    (tmp_path / "edge" / "bad.py").write_text("def f():\n    import tensorflow as tf\n")
    with pytest.raises(deploy.DeployError, match="imports tensorflow"):
        deploy.check_no_tensorflow(["edge/bad.py"], root=tmp_path)
    with pytest.raises(deploy.DeployError, match="training-side"):
        deploy.check_no_tensorflow(["train/export.py"])


# -- the upload path, against a fake Hub ------------------------------------------------------


class FakeHfApi:
    """Records the calls deploy.py makes; `failure` (an exception) is raised by create_repo when set."""

    calls: list = []
    failure: Exception | None = None

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, **options):
        if FakeHfApi.failure is not None:
            raise FakeHfApi.failure
        FakeHfApi.calls.append(("create_repo", repo_id, options))
        prefix = "spaces/" if options.get("repo_type") == "space" else ""
        return f"https://huggingface.co/{prefix}{repo_id}"

    def upload_folder(self, **options):
        files = sorted(
            path.relative_to(options["folder_path"]).as_posix()
            for path in Path(options["folder_path"]).rglob("*")
            if path.is_file()
        )
        FakeHfApi.calls.append(("upload_folder", options["repo_id"], {**options, "files": files}))


@pytest.fixture
def fake_hub(monkeypatch):
    FakeHfApi.calls, FakeHfApi.failure = [], None
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    return FakeHfApi


def test_upload_creates_the_repositories_and_uploads_the_folders(fake_hub, smoke_run, tmp_path, capsys):
    status = deploy.main(
        [
            "--run",
            str(smoke_run),
            "--repo",
            SPACE_REPO,
            "--model-repo",
            MODEL_REPO,
            "--private",
            "--out",
            str(tmp_path / "space"),
        ]
    )
    output = capsys.readouterr()
    assert status == 0, output.err
    created = {call[1]: call[2] for call in fake_hub.calls if call[0] == "create_repo"}
    assert created[SPACE_REPO] == {
        "repo_type": "space",
        "exist_ok": True,
        "private": True,
        "token": FAKE_TOKEN,
        "space_sdk": "gradio",
    }
    assert created[MODEL_REPO]["repo_type"] == "model" and created[MODEL_REPO]["private"] is True
    uploads = {call[1]: call[2] for call in fake_hub.calls if call[0] == "upload_folder"}
    assert {"app.py", "README.md", "requirements.txt", "models/model_int8.tflite"} <= set(uploads[SPACE_REPO]["files"])
    assert "model_int8.tflite" in uploads[MODEL_REPO]["files"] and "README.md" in uploads[MODEL_REPO]["files"]
    assert deploy.MARKER_FILE in uploads[SPACE_REPO]["ignore_patterns"]
    assert f"https://huggingface.co/spaces/{SPACE_REPO}" in output.out
    assert FAKE_TOKEN not in output.out + output.err  # never printed


def _hub_error(status: int) -> Exception:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    return HfHubHTTPError(f"{status} error", response=httpx2.Response(status, request=request))


@pytest.mark.parametrize("status, message", [(401, "refused the token"), (403, "no permission to write")])
def test_hub_refusals_get_clear_errors(fake_hub, smoke_run, tmp_path, capsys, status, message):
    fake_hub.failure = _hub_error(status)
    assert deploy.main(["--run", str(smoke_run), "--repo", SPACE_REPO, "--out", str(tmp_path / "s")]) == 2
    error = capsys.readouterr().err
    assert message in error and SPACE_REPO in error and FAKE_TOKEN not in error


def test_no_token_is_a_clear_error(fake_hub, smoke_run, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert deploy.main(["--run", str(smoke_run), "--repo", SPACE_REPO]) == 2
    assert "no Hugging Face token" in capsys.readouterr().err
    assert fake_hub.calls == []


@pytest.mark.slow
def test_no_network_is_one_line_and_exit_2(smoke_run, tmp_path):
    """The real Hub client against an address where nothing listens: what it raises when the network is down."""
    import os

    environment = {
        **os.environ,
        "HF_ENDPOINT": f"http://127.0.0.1:{local_server.free_port()}",
        "HF_TOKEN": FAKE_TOKEN,
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    result = subprocess.run(
        [
            sys.executable,
            str(REPOSITORY / "hf_space" / "deploy.py"),
            "--run",
            str(smoke_run),
            "--repo",
            SPACE_REPO,
            "--out",
            str(tmp_path / "space"),
        ],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: cannot reach the Hugging Face Hub to upload {SPACE_REPO} ("), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert FAKE_TOKEN not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--repo", "just-a-name"], "not a Hugging Face repository id"),
        (["--repo", "a/b/c"], "not a Hugging Face repository id"),
        (["--repo", "user/bad--name"], "not a Hugging Face repository id"),
        (["--repo", SPACE_REPO, "--model-repo", "no slash"], "--model-repo"),
        ([], "--repo USER/NAME is required"),
        (["--dry-run"], "--dry-run needs --out"),
    ],
)
def test_bad_names_and_missing_options_are_clear_errors(fake_hub, smoke_run, capsys, arguments, message):
    assert deploy.main(["--run", str(smoke_run), *arguments]) == 2
    assert message in capsys.readouterr().err


def test_a_run_without_tflite_files_is_a_clear_error(fake_hub, tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert deploy.main(["--run", str(tmp_path), "--dry-run", "--out", str(tmp_path / "space")]) == 2
    error = capsys.readouterr().err
    assert "has no TFLite files" in error and "train/export.py" in error


def test_a_folder_not_made_by_deploy_is_never_overwritten(fake_hub, smoke_run, tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert deploy.main(["--run", str(smoke_run), "--dry-run", "--out", str(tmp_path)]) == 2
    assert "was not made by this script" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"


# -- the folder, started as a Space starts it ------------------------------------------------------


def _check_serves(server: local_server.LocalServer, space: Path, labels: list[str]) -> None:
    from gradio_client import Client, handle_file

    example = next((space / "demo" / "examples").rglob("*.png"))
    result = Client(server.url, verbose=False).predict(handle_file(str(example)), api_name="/predict")
    assert len(result["confidences"]) == min(ui.TOP_K, len(labels))
    assert {item["label"] for item in result["confidences"]} <= set(labels)
    assert server.blocked_imports() == []  # neither TensorFlow nor a module from outside the folder was tried
    loaded = server.loaded_modules()
    assert {"demo.ui", "edge.runtime"} <= set(loaded)
    assert all(Path(path).resolve().is_relative_to(space.resolve()) for path in loaded.values()), loaded


@pytest.mark.slow
def test_space_folder_starts_isolated_in_this_venv(assembled, smoke_run):
    space = Path(assembled["space"]["folder"])
    with local_server.LocalServer(space / "app.py", cwd=space, isolated=True) as server:
        _check_serves(server, space, artifacts.read_labels(smoke_run / "tflite" / "labels.txt"))


def _space_venv(requirements: Path) -> Path:
    """A venv with exactly requirements.txt installed, cached by the file's hash under test-artifacts/."""
    digest = hashlib.sha256(requirements.read_bytes() + sys.version.encode()).hexdigest()[:12]
    venv = REPOSITORY / "test-artifacts" / f"space-venv-{digest}"
    python = venv / "bin" / "python"
    if (venv / "installed.ok").is_file():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(requirements)],
        capture_output=True,
        text=True,
        timeout=VENV_INSTALL_TIMEOUT_S,
    )
    assert install.returncode == 0, f"pip install -r {requirements} failed:\n{install.stderr[-3000:]}"
    (venv / "installed.ok").write_text(requirements.read_text())
    return python


@pytest.mark.slow
def test_space_folder_runs_from_its_own_requirements(assembled, smoke_run):
    space = Path(assembled["space"]["folder"])
    python = _space_venv(space / "requirements.txt")
    missing = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util as u; print([m for m in ('tensorflow', 'keras') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.stdout.strip() == "[]"  # not installed at all in the Space's environment
    with local_server.LocalServer(space / "app.py", cwd=space, python=str(python)) as server:
        _check_serves(server, space, artifacts.read_labels(smoke_run / "tflite" / "labels.txt"))
