"""notebooks/train_on_gpu.ipynb runs top to bottom in smoke mode, from a fresh copy of the project.

The copy is what a clone would hold (tracked files plus new ones git does not ignore), so nothing
built or downloaded here helps it. CIFAR_EDGE_SMOKE=1: the smoke preset on the CPU, no network
install, the Space assembled as a dry run.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
NOTEBOOK = Path("notebooks") / "train_on_gpu.ipynb"
#: Seconds any one cell may take: training the smoke preset took about 60 s here, the whole notebook 131 s.
CELL_TIMEOUT_SECONDS = 900


def _fresh_copy(target: Path) -> Path:
    listed = (
        subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPOSITORY,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = REPOSITORY / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.mark.slow
def test_the_gpu_notebook_runs_top_to_bottom_in_smoke_mode(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    if shutil.which("git") is None or not (REPOSITORY / ".git").exists():
        pytest.skip("needs a git checkout to copy from")
    project = _fresh_copy(tmp_path / "clone")
    monkeypatch.setenv("CIFAR_EDGE_SMOKE", "1")
    notebook = nbformat.read(project / NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_SECONDS,
        kernel_name="python3",
        resources={"metadata": {"path": str(project / NOTEBOOK.parent)}},
    )
    client.execute()
    text = "\n".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
    assert "within the 1.0 point gate" in text
    assert "dry run: nothing uploaded" in text
    runs = list((project / "runs").glob("notebook-smoke-*"))
    assert len(runs) == 1 and (runs[0] / "tflite" / "model_int8.tflite").is_file()
    assert (runs[0] / "report.md").is_file() and list((runs[0] / "plots").glob("*.png"))
    assert list((project / "build").glob("notebook-smoke-*/app.py"))
