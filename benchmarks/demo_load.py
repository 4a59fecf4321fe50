"""Load test of the demo: N concurrent gradio_client callers against a running app.

    python benchmarks/demo_load.py --run runs/NAME --callers 8 --requests 25     # starts demo/app.py itself
    python benchmarks/demo_load.py --url http://127.0.0.1:7860/ --callers 8      # an app already running

Each caller is a thread with its own gradio_client Client (its own
connections), sending `--requests` photos in turn (demo/examples/*.jpg by
default) to `/predict` (or `/compare`: both models) and timing each call from
the client's side: upload, queue, preprocessing, inference, answer. Prints the
number of failed requests, p50/p95/max latency and the throughput over the
whole run; `--json FILE` writes them too. Any failed request makes the exit
status 1. The client runs on the same machine as the server, so on a small
machine both compete for the CPU: state the machine with the numbers.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from demo import local_server, ui
from edge.common import command, configuration, errors
from edge.common.configuration import option

REPOSITORY = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class LoadConfig:
    """Options of the demo load test."""

    url: str | None = option(None, "the app to load (default: start demo/app.py here with --run/--model)", "Target")
    run: str | None = option(None, "run folder to serve when starting the app here (default: demo/app.py's)", "Target")
    model: str | None = option(None, "one .tflite file to serve when starting the app here", "Target")
    concurrency: int = option(ui.CONCURRENCY_LIMIT, "the app's concurrency when started here", "Target")
    threads: int | None = option(None, "interpreter threads when starting the app here", "Target")
    endpoint: Literal["predict", "compare"] = option(
        "predict", "the API endpoint: predict (int8 only) or compare (int8 and float32, what the page calls)", "Load"
    )
    callers: int = option(8, "concurrent callers, each with its own client", "Load")
    requests: int = option(25, "requests per caller", "Load")
    warmup: int = option(3, "requests per caller before timing starts (not counted)", "Load")
    images: list = option([], "image files to send, in turn (default: demo/examples/*.jpg)", "Load")
    json: str | None = option(None, "also write the results to this JSON file", "Output")


def _caller(
    url: str,
    endpoint: str,
    images: list[str],
    count: int,
    warmup: int,
    start_barrier: threading.Barrier,
    latencies: list[float],
    failures: list[str],
) -> None:
    from gradio_client import Client, handle_file  # A dev dependency; imported where callers start.

    try:
        client = Client(url, verbose=False)
        for index in range(warmup):
            client.predict(handle_file(images[index % len(images)]), api_name=f"/{endpoint}")
    except Exception as error:  # Counted as failures; the caller still releases the others waiting to start.
        failures.extend([f"warm-up: {type(error).__name__}: {error}"] * count)
        start_barrier.wait()
        return
    start_barrier.wait()
    for index in range(count):
        image = images[index % len(images)]
        started = time.perf_counter()
        try:
            client.predict(handle_file(image), api_name=f"/{endpoint}")
        except Exception as error:  # A failed request is the result being measured, not a crash.
            failures.append(f"{Path(image).name}: {type(error).__name__}: {error}")
            continue
        latencies.append((time.perf_counter() - started) * 1000.0)


def measure(url: str, config: LoadConfig) -> dict[str, Any]:
    """Run the callers against `url`; latency percentiles (ms), throughput (requests/s), failures."""
    images = [str(path) for path in (config.images or sorted((REPOSITORY / "demo" / "examples").glob("*.jpg")))]
    if not images:
        raise configuration.ConfigError("no images to send: pass --images")
    latencies: list[float] = []
    failures: list[str] = []
    barrier = threading.Barrier(config.callers + 1)
    threads = [
        threading.Thread(
            target=_caller,
            args=(url, config.endpoint, images, config.requests, config.warmup, barrier, latencies, failures),
            daemon=True,
        )
        for _ in range(config.callers)
    ]
    for thread in threads:
        thread.start()
    barrier.wait()  # every caller is connected and warmed up
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall_s = time.perf_counter() - started
    values = np.array(latencies) if latencies else np.array([np.nan])
    return {
        "endpoint": config.endpoint,
        "callers": config.callers,
        "requests": config.callers * config.requests,
        "succeeded": len(latencies),
        "failed": len(failures),
        "failures": failures[:10],
        "p50_ms": float(np.percentile(values, 50)),
        "p95_ms": float(np.percentile(values, 95)),
        "max_ms": float(np.max(values)),
        "wall_s": wall_s,
        "throughput_per_s": len(latencies) / wall_s if wall_s > 0 else float("nan"),
        "images": [Path(image).name for image in images],
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
    }


def run(config: LoadConfig) -> dict[str, Any]:
    """Measure against --url, or start demo/app.py here, measure, and stop it."""
    if config.callers < 1 or config.requests < 1:
        raise configuration.ConfigError("--callers and --requests must be at least 1")
    if config.url:
        return measure(config.url, config)
    arguments = ["--concurrency", str(config.concurrency)]
    arguments += ["--run", config.run] if config.run else []
    arguments += ["--model", config.model] if config.model else []
    arguments += ["--threads", str(config.threads)] if config.threads else []
    with local_server.LocalServer(REPOSITORY / "demo" / "app.py", arguments, cwd=REPOSITORY) as server:
        result = measure(server.url, config)
        result["server"] = {"arguments": arguments, "alive_after": server.alive()}
    return result


def _summary(config: LoadConfig, result: dict) -> str:
    lines = [
        f"/{result['endpoint']}: {result['callers']} callers x {config.requests} requests = {result['requests']}; "
        f"failed {result['failed']}",
        f"latency p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms, max {result['max_ms']:.1f} ms; "
        f"throughput {result['throughput_per_s']:.1f} requests/s over {result['wall_s']:.1f} s "
        f"({result['cpu_count']} CPUs, load average {result['load_average_1min']:.1f})",
    ]
    return "\n".join(lines + [f"  failed: {failure}" for failure in result["failures"]])


def _did_not_start(error: BaseException, config: LoadConfig) -> int:
    """The app under test did not start (local_server raises RuntimeError): one line, as for bad input."""
    print(f"error: {error}", file=sys.stderr)
    return errors.EXIT_USAGE


COMMAND = command.Command(
    name="demo_load",
    prog="python benchmarks/demo_load.py",
    description=__doc__.split("\n\n")[0],
    config_class=LoadConfig,
    run=run,
    render=_summary,
    json_file="json",
    exit_status=lambda config, result: 1 if result["failed"] else 0,
    handlers=((RuntimeError, _did_not_start),),
)


main = command.entry_point(COMMAND)


if __name__ == "__main__":
    raise SystemExit(main())
