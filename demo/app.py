"""The local web demo: the int8 TFLite model (and float32 beside it) behind a Gradio page.

    python demo/app.py                          # the Space's models/ folder, else the newest runs/*/tflite
    python demo/app.py --run runs/NAME          # a finished, exported run
    python demo/app.py --model path/model_int8.tflite [--port 7860] [--share]

The page itself is built by demo/ui.py, which the Hugging Face Space uses too; the
files to serve are found by edge/common/run_folder.py and loaded by demo/models.py.
`demo` is the module-level Gradio app (the Gradio convention, e.g. for
`gradio demo/app.py`); it is built on first access from the default options.
No TensorFlow is imported.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

# Gradio's analytics off before gradio is imported (it reads the variable at import and at
# launch), as demo/local_server.py does; `GRADIO_ANALYTICS_ENABLED=True` still turns them on.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from demo import ui  # noqa: E402 - after the variable above
from demo.models import DemoError, DemoModels, load_models
from edge.common import command, configuration, run_folder
from edge.common.configuration import option

CODE_ROOT = Path(__file__).resolve().parents[1]  # the repository, or the assembled Space folder


@dataclasses.dataclass
class DemoConfig:
    """Options of the demo server. Flags: `python demo/app.py --help`."""

    run: str | None = option(
        None,
        "run folder (its tflite/ is served), or a folder holding model_int8.tflite; "
        "default: models/ next to the app, else the newest runs/*/tflite",
        "Model",
    )
    model: str | None = option(
        None,
        "one .tflite file to serve instead of --run (labels.txt beside it; "
        "a model_float32.tflite beside it is shown side by side)",
        "Model",
    )
    threads: int | None = option(None, "interpreter threads per model; none: the runtime chooses", "Model")
    port: int | None = option(None, "port to listen on (default: $GRADIO_SERVER_PORT, else 7860)", "Server")
    host: str | None = option(
        None, "address to listen on (default: $GRADIO_SERVER_NAME, else 127.0.0.1; 0.0.0.0 for the network)", "Server"
    )
    share: bool = option(False, "also open a temporary public gradio.live link", "Server")
    concurrency: int = option(ui.CONCURRENCY_LIMIT, "requests processed at once (see demo/ui.py for why 2)", "Server")
    max_file_size: str = option(ui.MAX_FILE_SIZE, "largest accepted upload, e.g. 10mb", "Server")


def default_model_folder(root: Path | None = None) -> Path:
    """models/ next to the app (an assembled Space), else the newest runs/*/tflite holding an int8 model.

    `root` defaults to CODE_ROOT: the repository, or the Space folder the app was copied into.
    """
    try:
        return run_folder.find_default_model(root if root is not None else CODE_ROOT).parent
    except run_folder.ModelFilesError as error:
        raise DemoError(f"no model to serve: {error}; or pass --run / --model") from None


def load(config: DemoConfig) -> DemoModels:
    """Find and load the models the config names."""
    if config.run is not None and config.model is not None:
        raise configuration.ConfigError("give --run or --model, not both")
    if config.concurrency < 1:
        raise configuration.ConfigError(f"concurrency must be at least 1, got {config.concurrency}")
    if config.model is not None:
        files = run_folder.find_model_files(model=config.model)
    else:
        files = run_folder.find_model_files(folder=config.run if config.run is not None else default_model_folder())
    return load_models(files, threads=config.threads)


def build(config: DemoConfig) -> tuple[Any, DemoModels]:
    """(the Gradio Blocks app, its models), not started."""
    models = load(config)
    report_url = models.metadata.get("report_url")  # set by hf_space/deploy.py when a model repo holds the report
    return ui.build_demo(
        models, report_url=report_url, concurrency_limit=config.concurrency, max_file_size=config.max_file_size
    ), models


def run(config: DemoConfig, block: bool = True) -> str:
    """Build and start the server; returns the local URL (after the server stops, when `block`)."""
    app, models = build(config)
    print(
        f"serving {models.files.model}" + (f" and {models.files.reference}" if models.files.reference else ""),
        flush=True,
    )
    _, local_url, _ = ui.launch(
        app, models, server_port=config.port, server_name=config.host, share=config.share, prevent_thread_lock=True
    )
    if block:
        app.block_thread()
    return local_url


def parse_config(argv: list[str] | None = None) -> DemoConfig:
    """DemoConfig from the command line (the harness's parser)."""
    return command.parse_config(COMMAND, argv)


COMMAND = command.Command(
    name="demo", prog="python demo/app.py", description=__doc__.split("\n\n")[0], config_class=DemoConfig, run=run
)


main = command.entry_point(COMMAND)


def __getattr__(name: str) -> Any:
    """`demo`, built from the default options on first access (so importing this module loads no model)."""
    if name == "demo":
        app, _ = build(DemoConfig())
        globals()["demo"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    raise SystemExit(main())
