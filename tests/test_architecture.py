"""The layout's promises (docs/architecture.md), checked on the source itself.

    .venv/bin/pytest tests/test_architecture.py -q

- The device side (edge/) imports nothing from train/ and no TensorFlow or Keras, at any depth:
  every edge module imports in a fresh interpreter where those are blocked.
- No import cycle between the project's files.
- No file points outside the repository.
"""

from __future__ import annotations

import ast
import configparser
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

# The one import walker, the one the Space's module closure follows, so both read imports alike.
from hf_space.deploy import imported_names

REPOSITORY = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "train", "demo", "hf_space")
#: What the Pi and the Space never have.
TRAINING_SIDE = ("train", "tensorflow", "keras", "tf_keras")
#: The folder beside a checkout that design notes once pointed to; spelled in two parts so this file passes too.
OUTSIDE = "../" + "shared"


def _modules(package: str) -> list[str]:
    """Every module of the package, its subpackages' (edge.common.run_folder) included; scripts in plain
    folders (demo/examples/make_smoke_examples.py) are not modules of it."""
    return sorted(
        ".".join(path.relative_to(REPOSITORY).with_suffix("").parts)
        for path in (REPOSITORY / package).rglob("*.py")
        if path.stem != "__init__" and (path.parent / "__init__.py").is_file()
    )


def test_no_edge_file_names_the_training_side():
    for path in sorted(REPOSITORY.joinpath(*module.split(".")).with_suffix(".py") for module in _modules("edge")):
        offending = sorted(name for name in imported_names(path) if name.split(".")[0] in TRAINING_SIDE)
        assert not offending, f"{path.relative_to(REPOSITORY)} imports {offending}"


def test_every_edge_module_imports_with_the_training_side_blocked():
    """Import each edge module in a fresh interpreter whose import system refuses train, TensorFlow and Keras."""
    code = f"""
import importlib, importlib.abc, sys
BLOCKED = {TRAINING_SIDE!r}
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked on the device side: {{name}}")
        return None
sys.meta_path.insert(0, Refuse())
for name in {_modules("edge")!r}:
    importlib.import_module(name)
loaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
assert not loaded, loaded
print("imported", len({_modules("edge")!r}))
"""
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPOSITORY, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f"imported {len(_modules('edge'))}" in completed.stdout


def _project_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (at any depth in the file)."""
    known = {module for package in PACKAGES for module in _modules(package)}
    graph = {}
    for module in known:
        path = REPOSITORY.joinpath(*module.split(".")).with_suffix(".py")
        graph[module] = {name for name in imported_names(path) if name in known and name != module}
    return graph


def test_no_import_cycle_between_files():
    graph = _project_graph()
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                cycle = trail[trail.index(imported) :] + [imported] if imported in trail else [module, imported]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if imported not in state:
                visit(imported, trail + [imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_device_side_never_imports_the_host_side():
    graph = _project_graph()
    for module, imported in graph.items():
        if module.startswith(("edge.", "demo.", "hf_space.app")):
            assert not {name for name in imported if name.startswith("train.")}, module


def test_no_file_points_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPOSITORY, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    for name in tracked:
        path = REPOSITORY / name
        if path.suffix not in (".py", ".md", ".cfg", ".toml", ".txt", "") or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        assert OUTSIDE not in text, name


def test_every_console_script_names_a_main():
    setup = configparser.ConfigParser()
    setup.read(REPOSITORY / "setup.cfg")
    scripts = [line.split("=") for line in setup["options.entry_points"]["console_scripts"].strip().splitlines()]
    assert len(scripts) >= 10
    for name, target in scripts:
        module_name, function = target.strip().split(":")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, function)), name
        assert 'if __name__ == "__main__":' in Path(module.__file__).read_text(), f"python -m {module_name}"


@pytest.mark.slow
def test_the_run_folder_list_names_everything_a_run_holds(smoke_run):
    """docs/architecture.md lists every file and folder of a run folder: each entry of a finished run
    (trained, evaluated, exported), and logs/, which only --tensorboard writes."""
    text = (REPOSITORY / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("```\nruns/NAME/\n", 1)[1].split("```", 1)[0]
    listed = {line.split()[0] for line in block.splitlines() if line.startswith("  ") and not line.startswith("   ")}
    present = {path.name + ("/" if path.is_dir() else "") for path in smoke_run.iterdir()}
    present = {name if name != "plots/" else "plots/*.png" for name in present}
    assert present <= listed, f"not in the list: {sorted(present - listed)}"
    assert "logs/" in listed


#: The most positional parameters a function of train/, edge/ or demo/ may take (self and cls not
#: counted): beyond this a call is a row of values to get in the right order, so the rest are keyword-only.
MAX_POSITIONAL_PARAMETERS = 6


def test_no_function_takes_more_than_six_positional_parameters():
    offending = []
    for package in ("train", "edge", "demo"):
        for module in _modules(package):
            path = REPOSITORY.joinpath(*module.split(".")).with_suffix(".py")
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names = [argument.arg for argument in node.args.posonlyargs + node.args.args]
                    if names[:1] in (["self"], ["cls"]):
                        names = names[1:]
                    if len(names) > MAX_POSITIONAL_PARAMETERS:
                        offending.append(f"{module}.{node.name} (line {node.lineno}): {len(names)}")
    assert not offending, "more than six positional parameters: " + ", ".join(offending)
