"""Start a demo app (demo/app.py or a Space folder's app.py) in a subprocess on localhost; wait for it; stop it.

Used by the tests, the load benchmark (benchmarks/demo_load.py) and anyone who
wants to check an assembled Space folder the way a Space starts it:

    python demo/local_server.py build/space/app.py      # starts it, calls /predict on an example, stops it

The app runs under a small bootstrap that makes TensorFlow and Keras
unimportable (an ImportError, exactly as on a Space where they are not
installed) and reports where every `demo`/`edge` module was loaded from, so a
caller can check that an assembled folder uses only its own copies.
Standard library only (gradio_client for the check in `main`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edge.common import command
from edge.common.configuration import option

BLOCKED_MODULES = ("tensorflow", "keras", "tf_keras")
PROJECT_PACKAGES = ("demo", "edge")
URL_PATTERN = re.compile(r"Running on local URL:\s+(http://\S+)")
LOADED_PATTERN = re.compile(r"^LOADED (\S+) FROM (.+)$", re.MULTILINE)
BLOCKED_PATTERN = re.compile(r"^BLOCKED (\S+)$", re.MULTILINE)
START_TIMEOUT_S = 180.0  # a cold start of gradio on a busy 2-core machine has taken over a minute

# Runs before the app: TensorFlow raises ImportError, project modules report their file (and are never
# taken from an installed copy, such as the repository's editable install), then the app
# runs as __main__ with its own folder first on sys.path (as `python app.py` would have it).
BOOTSTRAP = r"""
import importlib.abc, importlib.machinery, os, runpy, sys
BLOCKED = set(os.environ.get("DEMO_BLOCKED_IMPORTS", "").split(",")) - {""}
PROJECT = set(os.environ.get("DEMO_PROJECT_PACKAGES", "").split(",")) - {""}
class Guard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in BLOCKED:
            print(f"BLOCKED {name}", file=sys.stderr, flush=True)
            raise ImportError(f"{name} is not installed here (blocked by demo/local_server.py)")
        if top in PROJECT:
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None:  # Not on sys.path: refuse rather than fall back to an installed (editable) copy.
                print(f"BLOCKED {name}", file=sys.stderr, flush=True)
                raise ImportError(f"{name} is not in the app's folder (demo/local_server.py)")
            print(f"LOADED {name} FROM {spec.origin}", file=sys.stderr, flush=True)
            return spec
        return None
sys.meta_path.insert(0, Guard())
script = os.path.abspath(sys.argv[1])
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(script))
runpy.run_path(script, run_name="__main__")
"""


def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalServer:
    """`script` (an app.py) started with `arguments` in `cwd`; a context manager that stops it on exit.

    `isolated=True` starts Python with -s -E (no user site-packages, no
    PYTHON* variables such as PYTHONPATH), so the app finds only its own
    folder and the interpreter's installed packages.
    """

    # The options after the script's arguments are keyword-only: six of them, easy to give in the wrong order.
    def __init__(
        self,
        script: str | Path,
        arguments: list[str] | None = None,
        *,
        cwd: str | Path | None = None,
        python: str = sys.executable,
        port: int | None = None,
        isolated: bool = True,
        block: tuple[str, ...] = BLOCKED_MODULES,
        extra_env: dict[str, str] | None = None,
    ):
        self.script = Path(script).resolve()
        self.port = port or free_port()
        self.cwd = Path(cwd) if cwd else self.script.parent
        self.log_path = Path(tempfile.mkstemp(prefix="demo-server-", suffix=".log")[1])
        # A relative interpreter path must survive the change of directory (absolute, not resolved:
        # a venv's python is a symlink whose location is what makes it the venv's).
        python = str(Path(python).absolute()) if os.sep in python else python
        flags = ["-u"] + (["-s", "-E"] if isolated else [])
        self.command = [python, *flags, "-c", BOOTSTRAP, str(self.script), *(arguments or [])]
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
        self.env.update(
            {
                "GRADIO_SERVER_PORT": str(self.port),
                "GRADIO_SERVER_NAME": "127.0.0.1",
                "GRADIO_ANALYTICS_ENABLED": "False",
                "DEMO_BLOCKED_IMPORTS": ",".join(block),
                "DEMO_PROJECT_PACKAGES": ",".join(PROJECT_PACKAGES),
            }
        )
        self.env.update(extra_env or {})
        self.process: subprocess.Popen | None = None
        self.url: str | None = None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> str:
        """Start the app and return its URL once it says it is running; RuntimeError with the log otherwise."""
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            match = URL_PATTERN.search(self.log())
            if match:
                self.url = match.group(1).rstrip("/") + "/"
                return self.url
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.script} exited with status {self.process.returncode}:\n{self.log()[-4000:]}")
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.script} did not start within {timeout_s:.0f} s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def loaded_modules(self) -> dict[str, str]:
        """{module name: file} of every demo/edge module the app imported."""
        return dict(LOADED_PATTERN.findall(self.log()))

    def blocked_imports(self) -> list[str]:
        """Refused imports: TensorFlow/Keras, and project modules missing from the app's sys.path."""
        return BLOCKED_PATTERN.findall(self.log())

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Interrupt the app (Gradio shuts down on SIGINT), then kill it if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exception) -> None:
        self.stop()


@dataclasses.dataclass
class ProbeConfig:
    """The options of `python demo/local_server.py SCRIPT [IMAGE]`."""

    script: str | None = option(None, "the app.py to start (demo/app.py or a Space folder's app.py)")
    image: str | None = option(None, "image to classify (default: the first example)")


def probe(config: ProbeConfig) -> str:
    """Start an app.py, classify one example image through /predict, and say what it imported; then stop."""
    from gradio_client import Client, handle_file  # A dev dependency, for the command line only.

    image = config.image or str(
        next(
            Path(config.script).resolve().parent.glob("demo/examples/**/*.*g"),
            Path(__file__).resolve().parent / "examples" / "rocket.jpg",
        )
    )
    with LocalServer(config.script) as server:
        result = Client(server.url, verbose=False).predict(handle_file(image), api_name="/predict")
        outside = {
            name: path
            for name, path in server.loaded_modules().items()
            if not Path(path).resolve().is_relative_to(Path(config.script).resolve().parent)
        }
        return "\n".join(
            [
                f"{server.url} answered for {image}: {result}",
                "TensorFlow import attempts: " + (", ".join(server.blocked_imports()) or "none"),
                "project modules from outside the app's folder: " + (", ".join(outside) or "none"),
            ]
        )


COMMAND = command.Command(
    name="local_server",
    prog="python demo/local_server.py",
    description=__doc__.split("\n\n")[0],
    config_class=ProbeConfig,
    run=probe,
    render=lambda config, text: text,
    positional=(
        command.Positional("script", "SCRIPT", "the app.py to start", nargs=None),
        command.Positional("image", "IMAGE", "image to classify (default: the first example)", nargs="?"),
    ),
)


main = command.entry_point(COMMAND)


if __name__ == "__main__":
    raise SystemExit(main())
